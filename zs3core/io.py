"""Atomic outputs and small file helpers shared by every stage.

A stage writes everything through :class:`StageOutputs`: files are first written into a
staging folder next to their destination and moved into place only when the whole stage
succeeded, so a failing stage leaves no partial output behind (DVC then sees the outputs
as missing, never as half-written).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class Zs3Error(Exception):
    """An input problem the user must fix; its message names the file, id or key."""


class StageOutputs:
    """Collect a stage's outputs in a staging folder and publish them all at the end.

    Usage::

        with StageOutputs() as out:
            out.json("metrics/split.json", {...})
            out.path("data/split/manifest.csv")  # a staging path to write to yourself

    On a normal exit every staged path replaces its destination (files and folders); on an
    exception the staging folder is deleted and no destination is touched.

    Args:
        root: where the staging folder ``.zs3-stage-<pid>-*`` is made (same file system).
        before_publish: called after the block, before anything is published; an exception
            from it publishes nothing (the stages check that their params did not change).
        record: (path, text) written as one more output on success (the params a stage used).
        publish: False: stage everything, publish nothing (the ranks other than 0 of a
            distributed run, which compute alongside rank 0 but must not write).
    """

    def __init__(self, root: str | Path = ".", before_publish: Callable[[], None] | None = None,
                 record: tuple[str | Path, str] | None = None, publish: bool = True):
        self.root = Path(root)
        self._staged: dict[Path, Path] = {}
        self._tmp: Path | None = None
        self.before_publish, self.record, self.publish = before_publish, record, publish

    def __enter__(self) -> StageOutputs:
        self._tmp = Path(tempfile.mkdtemp(prefix=f".zs3-stage-{os.getpid()}-", dir=self.root))
        return self

    def path(self, dest: str | Path) -> Path:
        """Return a staging path for ``dest`` (parents created); publish it on success."""
        assert self._tmp is not None, "use StageOutputs as a context manager"
        dest = Path(dest)
        staged = self._tmp / f"{len(self._staged):03d}" / dest.name
        staged.parent.mkdir(parents=True, exist_ok=True)
        self._staged[dest] = staged
        return staged

    def json(self, dest: str | Path, obj: Any) -> None:
        """Stage ``obj`` as indented JSON for ``dest``.

        Raises:
            Zs3Error: ``obj`` holds a NaN or infinite number (:func:`finite_json`), naming ``dest``
                and the key.
        """
        try:
            finite_json(obj)
        except Zs3Error as e:
            raise Zs3Error(f"{dest}: {e}") from None
        self.path(dest).write_text(json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")

    def text(self, dest: str | Path, text: str) -> None:
        """Stage ``text`` for ``dest``."""
        self.path(dest).write_text(text)

    def write(self, dest: str | Path, writer: Callable[[Path], Any]) -> None:
        """Call ``writer(staging_path)``; e.g. ``out.write(p, lambda f: torch.save(obj, f))``."""
        writer(self.path(dest))

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._tmp is not None
        try:
            if exc_type is None and self.publish:
                if self.record is not None:
                    self.text(*self.record)
                if self.before_publish is not None:
                    self.before_publish()
                for dest, staged in self._staged.items():
                    if not staged.exists():
                        raise RuntimeError(f"stage output {dest} was reserved but never written")
                for dest, staged in self._staged.items():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    if dest.is_dir() and not dest.is_symlink():
                        shutil.rmtree(dest)
                    elif dest.exists() or dest.is_symlink():
                        dest.unlink()
                    os.replace(staged, dest)
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return False


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; Zs3Error naming it when it is missing."""
    path = Path(path)
    if not path.exists():
        raise Zs3Error(f"{path}: missing; run the stage that produces it (dvc repro)")
    return json.loads(path.read_text())


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; Zs3Error naming it when it is missing."""
    path = Path(path)
    if not path.exists():
        raise Zs3Error(f"{path}: missing")
    return yaml.safe_load(path.read_text())


def finite_json(obj: Any, where: str = "") -> Any:
    """``obj`` unchanged when every number in it is finite.

    Raises:
        Zs3Error: a NaN or infinite number, naming its key path (metrics files never hold them:
            a score computed from broken inputs must fail, not read as a number).
    """
    import math

    if isinstance(obj, dict):
        for k, v in obj.items():
            finite_json(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            finite_json(v, f"{where}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise Zs3Error(f"non-finite value {obj} at '{where}'; refusing to write it as a result")
    return obj


def check_finite(tensors, what: str) -> None:
    """Raise Zs3Error naming ``what`` and the tensor when any value is NaN or infinite.

    Args:
        tensors: a ``state_dict()``-like mapping of name -> tensor, or an ``nn.Module``.
        what: the file or model named in the message (e.g. ``data/classifier/zs3net.pt``).
    """
    import torch

    items = tensors.state_dict().items() if hasattr(tensors, "state_dict") else tensors.items()
    for name, t in items:
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise Zs3Error(f"{what}: '{name}' holds NaN or infinite values; not saved")


def require_finite(loss, loop: str, step: int) -> None:
    """Stop a training loop at its first non-finite loss.

    Raises:
        Zs3Error: naming the loop and the 1-based step (nothing of that loop is then saved).
    """
    import torch

    if not bool(torch.isfinite(loss.detach()).all()):
        raise Zs3Error(f"{loop}: the loss is {float(loss.detach().float().mean())} at step {step}; stopped before "
                       "any weight is saved. Check the input features for NaN/Inf and lower the learning rate.")


class LiveCurves:
    """A training loop's per-step scalars logged with DVCLive (``<dir>/plots/metrics/<name>.tsv``),
    so that ``dvc plots show`` / ``dvc plots diff`` draw them. Use as the loop's ``on_step``.

    Args:
        directory: the DVCLive folder (inside a stage's output, e.g. ``plots/generator/dvclive``).
        every: log one step in ``every`` (a generator makes thousands of steps).
    """

    def __init__(self, directory: str | Path, every: int = 1):
        from dvclive import Live

        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)
        self.every = max(1, int(every))

    def __call__(self, step: int, values: dict) -> None:
        import math

        if step % self.every:
            return
        self.live.step = step
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.live.log_metric(k, v)

    def close(self) -> None:
        self.live.end()


def remove_stale_staging(root: str | Path = ".") -> list[Path]:
    """Remove the ``.zs3-stage-<pid>-*`` folders of processes that no longer run (a killed stage
    publishes nothing; its staging folder is garbage). Returns the folders removed."""
    removed = []
    for d in Path(root).glob(".zs3-stage-*"):
        parts = d.name.split("-")
        pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
        alive = False
        if pid is not None:
            try:
                os.kill(pid, 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed
