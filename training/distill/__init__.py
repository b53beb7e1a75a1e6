"""DMD2 step + CFG distillation (paper §3.4): a 4-step, guidance-free generator from the base DiT.

Modules: `batch` (condition batches and data), `lora` (fake score = base + peft LoRA, real score =
the same weights with the adapter disabled), `gan_head` (discriminator head on fake-score
features), `dmd` (DMD gradient, losses, backward simulation), `trainer` (accelerate loop, curriculum,
EMA, checkpoints, CLI). See docs/distillation.md.
"""

from .batch import CondBatch, collate, open_examples, synthetic_examples
from .dmd import Critic, dmd_gradient, dmd_loss, flow_loss
from .lora import lora_target_modules, make_fake_score

_TRAINER_NAMES = ("Curriculum", "DistillConfig", "DistillTrainer")


def __getattr__(name: str):
    """Trainer names load lazily so `python -m training.distill.trainer` does not import it twice."""
    if name in _TRAINER_NAMES:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CondBatch",
    "Critic",
    "Curriculum",
    "DistillConfig",
    "DistillTrainer",
    "collate",
    "dmd_gradient",
    "dmd_loss",
    "flow_loss",
    "lora_target_modules",
    "make_fake_score",
    "open_examples",
    "synthetic_examples",
]
