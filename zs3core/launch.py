"""Start a stage the way ``scale.launcher`` says: ``python -m zs3core.launch stages.<name>``.

dvc.yaml runs ``train_backbone`` and ``extract_features`` through this module, so that
``dvc repro`` (and ``dvc exp run -S scale.launcher=torchrun -S scale.nproc_per_node=4``) uses
PyTorch's own launcher when asked:

* ``scale.launcher: none``: the stage runs in this process, as ``python -m stages.<name>``;
* ``scale.launcher: torchrun``: ``torchrun --standalone --nproc_per_node N -m stages.<name>``
  (``python -m torch.distributed.run``, the same program), one machine, N processes; the
  stage joins the process group itself (:mod:`zs3core.distributed`).

Several machines: start the stage on each with torchrun's rendezvous options
(``--nnodes``, ``--rdzv-endpoint``; PyTorch's torchrun documentation), then ``dvc commit``
its outputs on the machine of rank 0.

Only ``params.yaml`` is read here (no torch import), and the exit status is the stage's.
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys

import yaml


def command(module: str, scale: dict) -> list[str] | None:
    """The torchrun command for ``module`` under the ``scale`` params, or None to run in-process.

    Raises:
        SystemExit: unknown ``scale.launcher`` or a non-positive ``scale.nproc_per_node``.
    """
    launcher, n = scale.get("launcher", "none"), scale.get("nproc_per_node", 1)
    if launcher == "none":
        return None
    if launcher != "torchrun":
        raise SystemExit(f"error: params.yaml: scale.launcher must be none or torchrun, got {launcher!r}")
    if not isinstance(n, int) or n < 1:
        raise SystemExit(f"error: params.yaml: scale.nproc_per_node must be an integer >= 1, got {n!r}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", "-m", module]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].startswith("stages."):
        raise SystemExit("usage: python -m zs3core.launch stages.<name>")
    module = argv[0]
    scale = (yaml.safe_load(open("params.yaml")) or {}).get("scale", {}) if os.path.exists("params.yaml") else {}
    cmd = command(module, scale)
    if cmd is None:
        sys.argv = [module.replace(".", "/") + ".py"]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return 0
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
