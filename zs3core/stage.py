"""What every stage (``stages/<name>.py``) does around its science: read and check the params
once, seed, pick the device, write outputs atomically with a guard against params changed
mid-run, clean what a killed stage left, report time and memory.

A stage is ``run(main)`` where ``main(st: Stage)`` reads its inputs (paths named in the stage
file), calls ``zs3core`` and writes through ``with st.outputs() as out:``.
"""
from __future__ import annotations

import resource
import sys
import time
import traceback
from pathlib import Path

import yaml

from zs3core.config import Config, config_from_dict, load_yaml_params
from zs3core.distributed import SINGLE, init_from_env, shutdown   # no torch import at module level
from zs3core.io import StageOutputs, Zs3Error, remove_stale_staging

PARAMS = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")


def _subset(raw: dict, keys: list[str]) -> dict:
    """The values of dotted ``keys`` (a stage's ``params`` in dvc.yaml) in the params mapping."""
    out = {}
    for key in keys:
        node = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[key] = node
    return out


def _changed(old, new, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two (nested) params mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _changed(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [prefix] if old != new else []


class Stage:
    """One run of a stage: validated params (``cfg``), the seeded ``rng``, the ``device``, and
    ``dist`` (:class:`zs3core.distributed.DistEnv`: rank and world size under torchrun; a single
    process otherwise). Under torchrun only rank 0 publishes outputs.

    Args:
        name: the stage's name in dvc.yaml (default: the running module's name).
        light: no torch (no ``rng``, no ``device``), for stages that run on every ``dvc repro``.
    """

    def __init__(self, name: str | None = None, light: bool = False):
        self.name = name or Path(sys.argv[0]).stem
        raw = load_yaml_params(PARAMS)
        self.cfg: Config = config_from_dict(raw)
        spec = yaml.safe_load(DVC_YAML.read_text())["stages"].get(self.name, {}) if DVC_YAML.exists() else {}
        self.keys = [str(k) for k in spec.get("params", [])]
        self.used = _subset(raw, self.keys)
        self.rng = self.device = None
        self.dist = SINGLE
        if not light:   # a light stage (source_stamp) must not pay torch's import on every `dvc repro`
            from zs3core.runtime import pick_device, seed_everything, set_threads

            set_threads()
            self.rng = seed_everything(self.cfg.seed)
            self.dist, self.device = init_from_env(pick_device(self.cfg.scale.device))

    def check_params_unchanged(self) -> None:
        """Raise Zs3Error when a param this stage read changed in params.yaml since it started
        (another DVC command in the same workspace): its outputs would not match dvc.lock."""
        now = _subset(load_yaml_params(PARAMS), self.keys)
        changed = sorted(_changed(self.used, now))
        if changed:
            raise Zs3Error(f"params.yaml changed while stage '{self.name}' ran ({', '.join(changed)}); nothing was "
                           "written. Run one DVC command per workspace; use `dvc exp run --queue` or `--temp` for "
                           "parallel experiments")

    def outputs(self) -> StageOutputs:
        """Atomic outputs, published only if the params are unchanged; they include
        ``params/<stage>.yaml``, the params this run used. On a rank other than 0 of a
        distributed run they are written to a staging folder and discarded."""
        return StageOutputs(before_publish=self.check_params_unchanged, publish=self.dist.is_main,
                            record=(Path("params") / f"{self.name}.yaml", yaml.safe_dump(self.used, sort_keys=False)))


def run(main, light: bool = False) -> None:
    """Run ``main(Stage(light=light))``; an input error prints one clear line and exits with status 2."""
    t0 = time.time()
    try:
        for d in remove_stale_staging():
            print(f"removed {d}, left by an interrupted stage")
        st = Stage(light=light)
        main(st)
        shutdown(st.dist)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        if st.dist.is_main:
            print(f"[{st.name}] done in {time.time() - t0:.1f} s, peak RSS {peak:.0f} MB"
                  + (f" (rank 0 of {st.dist.world_size})" if st.dist.enabled else ""))
    except Zs3Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted; outputs left untouched", file=sys.stderr)
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
