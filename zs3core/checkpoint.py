"""Resumable training loops: the one checkpoint format (modules, optimisers, schedulers, RNG
states, curves) of every loop.

Every training loop of the pipeline (backbone, generators, classifiers, DeViSE; all run by
:func:`zs3core.loop.run_steps`) can be interrupted and restarted: the stage passes a
:class:`Checkpoint` bound to a file under ``data/.work`` and to a hash of its settings; the loop
restores it before its first step and saves it every ``every`` steps (or epochs). A restart
with the same settings continues after the last saved step with the same random streams, so it
ends with the same weights as an uninterrupted run; a checkpoint of other settings is ignored.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch


class Checkpoint:
    """One resumable loop's checkpoint file.

    Args:
        path: checkpoint file (written atomically: temp file + rename).
        run_hash: identifies the settings; a file with another hash is ignored.
        every: save every ``every`` steps (<= 0: never).
        writer: False for the ranks other than 0 of a distributed run: they restore the file
            but never save or remove it (rank 0 does).
    """

    def __init__(self, path: Path | str, run_hash: str, every: int = 200, writer: bool = True):
        self.path, self.run_hash, self.every, self.writer = Path(path), run_hash, int(every), writer

    def restore(self, objects: dict, generator: torch.Generator | None = None) -> tuple[int, dict]:
        """Load state into ``objects`` ({name: module or optimiser}) when a matching file exists.

        Returns:
            (number of finished steps, the ``extra`` dict saved with them), or (0, {}).
        """
        if not self.path.exists():
            return 0, {}
        ck = torch.load(self.path, map_location="cpu", weights_only=False)
        if ck.get("run_hash") != self.run_hash:
            print(f"ignoring {self.path}: it belongs to other settings")
            return 0, {}
        for name, obj in objects.items():
            obj.load_state_dict(ck["state"][name])
        torch.set_rng_state(ck["rng"])
        if generator is not None and ck.get("generator") is not None:
            generator.set_state(ck["generator"])
        print(f"resuming from {self.path} after step {ck['step']}")
        return int(ck["step"]), ck.get("extra", {})

    def due(self, step: int) -> bool:
        """True when ``step`` (1-based count of finished steps) should be saved."""
        return self.writer and self.every > 0 and step % self.every == 0

    def save(self, step: int, objects: dict, generator: torch.Generator | None = None, extra: dict | None = None) -> None:
        """Write the state after ``step`` finished steps."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save({"run_hash": self.run_hash, "step": step, "state": {k: o.state_dict() for k, o in objects.items()},
                    "rng": torch.get_rng_state(), "generator": generator.get_state() if generator is not None else None,
                    "extra": extra or {}}, tmp)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        """Remove the file once the loop finished and its outputs are written."""
        if self.writer:
            self.path.unlink(missing_ok=True)


WORK = Path("data/.work")
"""Where interrupted training loops keep their checkpoints (not a DVC output)."""


def stage_checkpoint(name: str, settings, inputs, every: int, writer: bool = True) -> Checkpoint:
    """The checkpoint of a stage's training loop in :data:`WORK`, bound to ``settings`` (any
    JSON-able object: the params the loop depends on) and to the size and modification time of
    its input files, so that a checkpoint of other settings or other inputs is ignored.
    ``writer``: see :class:`Checkpoint` (False on the ranks other than 0)."""
    import os

    from zs3core.runtime import config_hash

    stamp = [(str(f), os.path.getsize(f), os.path.getmtime(f)) for f in inputs if Path(f).exists()]
    return Checkpoint(WORK / f"{name}_checkpoint.pt", config_hash({"settings": settings, "inputs": stamp}), every, writer)
