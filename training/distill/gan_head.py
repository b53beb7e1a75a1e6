"""DMD2's GAN branch: a small head on the fake score's intermediate video-token features.

The discriminator shares the fake score's trunk (one more forward is not needed): a forward hook
on one middle block stores its video tokens, the head turns them into one logit per sample.
The critic = fake score (LoRA) + head, trained together.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from magicinfinite_core.models.dit import MagicInfiniteDiT


def feature_block_name(model: MagicInfiniteDiT, index: int | None = None) -> str:
    """Name of the block whose video tokens feed the head; default: the middle of all blocks."""
    n_double, n_single = len(model.double_blocks), len(model.single_blocks)
    total = n_double + n_single
    i = total // 2 if index is None else index
    if not 0 <= i < total:
        raise ValueError(f"feature block {i} is outside the DiT's {total} blocks")
    return f"double_blocks.{i}" if i < n_double else f"single_blocks.{i - n_double}"


class GANHead(nn.Module):
    """Patch features -> per-token MLP -> mean over tokens -> logit (larger = 'real')."""

    def __init__(self, hidden: int, width: int = 256):
        super().__init__()
        self.proj = nn.Linear(hidden, width)
        self.mid = nn.Linear(width, width)
        self.out = nn.Linear(width, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, N, hidden] -> logits [B]."""
        h = F.layer_norm(tokens.float(), (tokens.shape[-1],)).to(self.proj.weight.dtype)
        h = F.silu(self.proj(h))
        h = F.silu(self.mid(h.mean(dim=1)))
        return self.out(h).squeeze(-1)


class FeatureHook:
    """Captures the video tokens a block outputs while `active`; double blocks return (img, txt),
    single blocks return [img; txt] so the first `n_img` tokens are taken."""

    def __init__(self, block: nn.Module):
        self.active = False
        self.n_img = 0
        self.features: torch.Tensor | None = None
        self.handle = block.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple, output) -> None:
        if not self.active:
            return
        self.features = output[0] if isinstance(output, tuple) else output[:, : self.n_img]

    def pop(self) -> torch.Tensor:
        if self.features is None:
            raise RuntimeError(
                "the GAN feature hook captured nothing; was the critic run with features=True?"
            )
        f, self.features = self.features, None
        return f


def gan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating softplus loss of the critic: real -> high, generated -> low."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def gan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: make generated samples look real to the head."""
    return F.softplus(-fake_logits).mean()
