"""TensorBoard through accelerate's trackers: a run a person can watch (`tensorboard --logdir RUN`).

Why accelerate's trackers: the trainers already run on an `Accelerator`, whose trackers live on
the main process only and take the same `log(values, step)` call under DDP and FSDP. One
`RunTracker` per trained thing (stage 1, stage 2, the distillation) writes its event file into
that thing's folder, so one `--logdir RUN` shows every stage side by side. A resumed run purges
the events after its checkpoint step, as `log.jsonl` drops its records after it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

TRACKER = "tensorboard"
INSTALL_HINT = 'pip install "comfyui-magicinfinite[train]"  (or: pip install "tensorboard>=2.15")'


class TrackingUnavailableError(RuntimeError):
    """TensorBoard logging was asked for but the package is not installed."""


def tensorboard_problem() -> str | None:
    """None when TensorBoard can be imported, else the one line that says how to get it."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return (f"TensorBoard logging needs tensorboard, which is not installed: {INSTALL_HINT}; or switch "
                "it off (--set tensorboard=false, distillation: --no-tensorboard)")
    return None


def tracker_kwargs(enabled: bool, project_dir: str | Path) -> dict[str, Any]:
    """`Accelerator(**tracker_kwargs(...))`: TensorBoard logging into `project_dir`, or nothing."""
    if not enabled:
        return {}
    problem = tensorboard_problem()
    if problem:
        raise TrackingUnavailableError(problem)
    return {"log_with": TRACKER, "project_dir": str(project_dir)}


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """A nested config as the flat scalar dict TensorBoard's hparams take (lists and None as text)."""
    out: dict[str, int | float | str | bool] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_hparams(v, key + "."))
        elif isinstance(v, bool | int | float | str):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def frame_strip(frames: np.ndarray, count: int = 6, portrait: np.ndarray | None = None) -> np.ndarray:
    """`count` evenly spaced frames of a video [F, H, W, 3] side by side (the portrait first when
    given): one uint8 image [H, W * n, 3] that shows motion and identity at a glance."""
    frames = np.asarray(frames)
    idx = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    tiles = ([np.asarray(portrait, np.uint8)] if portrait is not None else []) + [frames[i] for i in idx]
    return np.concatenate(tiles, axis=1).astype(np.uint8)


class RunTracker:
    """Scalars and images of one run into `<project_dir>/<name>/events.out.tfevents.*` (main process).

    Disabled (`enabled=False`, or an accelerator made without `tracker_kwargs`), every call is a no-op.
    """

    def __init__(self, accelerator, name: str, config: Mapping[str, Any] | None, start_step: int = 0,
                 enabled: bool = True) -> None:
        self.acc = accelerator
        self.enabled = enabled and bool(getattr(accelerator, "log_with", None))
        if self.enabled:
            kwargs = {"purge_step": start_step + 1} if start_step else {}
            accelerator.init_trackers(name, config=flat_hparams(config or {}), init_kwargs={TRACKER: kwargs})

    def scalars(self, values: Mapping[str, Any], step: int) -> None:
        """Log the finite numeric values (others are skipped: an eval may report a text reason)."""
        if not self.enabled:
            return
        vals = {k: float(v) for k, v in values.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))}
        if vals:
            self.acc.log(vals, step=step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """One uint8 image [H, W, 3] through the TensorBoard writer."""
        if not self.enabled or not self.acc.is_main_process:
            return
        writer = self.acc.get_tracker(TRACKER, unwrap=True)
        writer.add_image(tag, np.asarray(image, np.uint8), global_step=step, dataformats="HWC")
        writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.acc.end_training()
