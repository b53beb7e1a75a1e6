"""The causal 3D VAE wrapper (diffusers' AutoencoderKLHunyuanVideo at the tiny config)."""

import torch

from magicinfinite_core.config import vae_preset
from magicinfinite_core.media.vae import FrameGroupNorm, VideoVAE


def test_causality_and_shapes():
    torch.manual_seed(0)
    vae = VideoVAE(vae_preset("tiny"))
    assert any(isinstance(m, FrameGroupNorm) for m in vae.modules())
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(1, 3, 13, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        z = vae.encode(frames)
        assert z.shape == (1, *vae.latent_shape(13, 32, 32)) == (1, 4, 4, 4, 4)
        changed = frames.clone()
        changed[:, :, 6] = -changed[:, :, 6]  # video frame 6 lives in latent frame 2 (frames 5..8)
        z2 = vae.encode(changed)
        assert torch.equal(z[:, :, :2], z2[:, :, :2]), "a later frame changed earlier latents"
        assert not torch.equal(z[:, :, 2], z2[:, :, 2])
        out = vae.decode(z)
        z3 = z.clone()
        z3[:, :, 2] += 1.0
        out3 = vae.decode(z3)
    assert out.shape == frames.shape and out.abs().max() <= 1
    assert torch.equal(out[:, :, :5], out3[:, :, :5]), "a later latent changed earlier decoded frames"
    assert not torch.equal(out[:, :, 5:9], out3[:, :, 5:9])


def test_frame_group_norm_keeps_groupnorm_weights():
    gn = torch.nn.GroupNorm(4, 8)
    torch.nn.init.normal_(gn.weight)
    fgn = FrameGroupNorm(4, 8)
    fgn.load_state_dict(gn.state_dict())
    x = torch.randn(2, 8, 1, 5, 5)  # one frame: identical to plain GroupNorm
    assert torch.allclose(fgn(x), gn(x), atol=1e-6)
