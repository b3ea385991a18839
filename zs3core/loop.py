"""The one training loop of the pipeline: resume, progress bar, curves, checkpoints, logging.

Every trainer (the backbone, the three generator kinds, the step-2 classifiers, DeViSE) is a
``step(i)`` function that performs its own optimisation for step (or epoch) ``i`` and returns
the step's scalars; :func:`run_steps` does everything around it:

* restores an interrupted run from a :class:`zs3core.checkpoint.Checkpoint` (modules,
  optimisers, schedulers, RNG states and the curves so far) and continues after its last
  saved step with the same random streams;
* shows a tqdm bar that never forces a redraw (its postfix is refreshed at tqdm's own pace,
  which ``stages/__init__.py`` slows to one line every 15 s when the output is a log file);
* appends the scalars to per-name curves, saves the checkpoint when due, then hands the step's
  values to ``on_step`` (the stages log them through DVCLive);
* prints a one-line summary every ``summary_every`` steps (each epoch's summary in a log).

A step must consume randomness only through its own code, so that a run, an interrupted and
resumed run, and the same run before and after a refactor end with the same weights.
"""
from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

from zs3core.checkpoint import Checkpoint


def run_steps(step: Callable[[int], dict], n: int, state: dict, rng=None, ckpt: Checkpoint | None = None,
              desc: str = "train", on_step: Callable[[int, dict], None] | None = None,
              summary_every: int = 0, unit: str = "step") -> dict[str, list]:
    """Run ``step(i)`` for i in [start, n) and collect its outputs.

    Args:
        step: performs step i (0-based) and returns {name: value} (floats, or any JSON-able
            value such as a per-class list).
        n: number of steps (or epochs). state: {name: object with ``state_dict``} saved in
            checkpoints (modules, optimisers, schedulers, a GradScaler). rng: the loop's
            ``torch.Generator`` (its state is checkpointed too).
        ckpt: optional checkpoint; restored before the first step, saved when due.
        on_step: called with (i + 1, values) after each step, also for the steps replayed
            from a checkpoint (so that a resumed run logs its whole curve).
        summary_every: print ``desc step k/n: name=value ...`` every so many steps (0 = never).
        unit: the bar's unit ("step", "epoch").

    Returns:
        {name: [value of each step]} (all steps, restored ones included).
    """
    start, extra = ckpt.restore(state, rng) if ckpt else (0, {})
    curves: dict[str, list] = extra.get("curves", {})
    if on_step:
        for i in range(start):
            on_step(i + 1, {k: v[i] for k, v in curves.items() if i < len(v)})
    bar = tqdm(range(start, n), desc=desc, leave=False, initial=start, total=n, unit=unit)
    for i in bar:
        values = step(i)
        for k, v in values.items():
            curves.setdefault(k, []).append(v)
        if ckpt and ckpt.due(i + 1):
            ckpt.save(i + 1, state, rng, {"curves": curves})
        shown = {k: f"{v:.4g}" for k, v in values.items() if isinstance(v, float)}
        bar.set_postfix(shown, refresh=False)
        if on_step:
            on_step(i + 1, values)
        if summary_every and ((i + 1) % summary_every == 0 or i + 1 == n):
            tqdm.write(f"{desc} {unit} {i + 1}/{n}: " + " ".join(f"{k}={v}" for k, v in shown.items()))
    return curves


def descend(opt, loss, loop: str, step: int) -> float:
    """One gradient step of ``opt`` on the scalar ``loss``, refused when it is not finite.

    Raises:
        Zs3Error: ``loss`` is NaN or infinite (:func:`zs3core.io.require_finite` names ``loop``
            and ``step``); the parameters are left as they were.

    Returns:
        the loss as a Python float.
    """
    from zs3core.io import require_finite

    require_finite(loss, loop, step)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()
