"""The DiT's audio path, its sizes, and checkpoint loading."""

import pytest
import torch

from magicinfinite_core.config import DiTConfig, dit_preset, latent_frames
from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.models.audio_layers import AudioCrossAttention, group_audio_by_latent_frame
from magicinfinite_core.models.dit import (
    AUDIO_PREFIXES,
    MagicInfiniteDiT,
    concat_image_condition,
    count_parameters,
)
from magicinfinite_core.weights.checkpoints import load_into, save_dit, save_state_dict
from magicinfinite_core.weights.transformer_layouts import load_transformer


def tiny_inputs(cfg: DiTConfig, k: int = 2, t: int = 3, hw: tuple[int, int] = (8, 8), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = cfg.audio
    x = torch.randn(1, cfg.in_channels, t, *hw, generator=g)
    return dict(
        x=x,
        timestep=torch.tensor([600.0]),
        txt=torch.randn(1, 5, cfg.text_dim, generator=g),
        txt_mask=None,
        pooled=torch.randn(1, cfg.pooled_dim, generator=g),
        audio=torch.randn(1, k, t, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g),
    )


def halves_mask(k: int, t: int, h: int, w: int) -> torch.Tensor:
    """Speaker 0 owns the left half of the token grid, speaker 1 the right half."""
    m = torch.zeros(1, k, t, h, w)
    m[:, 0, :, :, : w // 2] = 1
    if k > 1:
        m[:, 1, :, :, w // 2 :] = 1
    return m


def randomise_(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_13b_preset_size_on_meta_device():
    with torch.device("meta"):
        model = MagicInfiniteDiT(dit_preset("hunyuan-13b"))
    total = count_parameters(model)
    audio = count_parameters(model, AUDIO_PREFIXES)
    print(
        f"13B preset: backbone {(total - audio) / 1e9:.3f} B, audio {audio / 1e9:.3f} B, "
        f"audio layers {len(model.audio_double_blocks)} double + {len(model.audio_single_blocks)} single"
    )
    assert 12.5e9 <= total - audio <= 13.5e9
    assert len(model.audio_double_blocks) == 20 and len(model.audio_single_blocks) == 20


def test_fresh_audio_layers_leave_the_stage1_model_unchanged():
    cfg = dit_preset("tiny")
    torch.manual_seed(0)
    model = MagicInfiniteDiT(cfg).eval()
    stage1 = MagicInfiniteDiT(cfg.without_audio()).eval()
    stage1.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(AUDIO_PREFIXES)})
    inp = tiny_inputs(cfg)
    with torch.no_grad():
        with_audio = model(**inp, speaker_mask=halves_mask(2, 3, 4, 4))
        inp.pop("audio")
        without = stage1(**inp)
    assert torch.equal(with_audio, without)


def test_audio_layer_moves_only_tokens_inside_each_speakers_mask():
    cfg = dit_preset("tiny")
    layer = AudioCrossAttention(cfg.hidden_size, cfg.audio)
    randomise_(layer)
    g = torch.Generator().manual_seed(3)
    t, s, c = 3, 16, cfg.hidden_size
    img = torch.randn(1, t * s, c, generator=g)
    ctx = torch.randn(1, 2, t, cfg.audio.tokens_per_latent_frame, cfg.audio.context_dim, generator=g)
    mask = halves_mask(2, t, 4, 4).flatten(2)  # [1, 2, T*S]
    base = layer(img, ctx, mask)
    ctx2 = ctx.clone()
    ctx2[:, 0] = torch.randn(ctx2[:, 0].shape, generator=g)  # only speaker 0's audio changes
    moved = (layer(img, ctx2, mask) - base).abs().sum(-1)[0]  # [T*S]
    inside0 = mask[0, 0].bool()
    assert torch.all(moved[~inside0] == 0), "speaker 0's audio leaked outside its mask"
    assert torch.all(moved[inside0] > 0), "speaker 0's audio did not reach its own region"


def test_zero_speaker_mask_makes_the_model_deaf_exactly():
    cfg = dit_preset("tiny")
    torch.manual_seed(0)
    model = MagicInfiniteDiT(cfg).eval()
    randomise_(model)
    inp = tiny_inputs(cfg)
    zeros = torch.zeros(1, 2, 3, 4, 4)
    with torch.no_grad():
        a = model(**inp, speaker_mask=zeros)
        inp["audio"] = torch.randn_like(inp["audio"])
        b = model(**inp, speaker_mask=zeros)
        c = model(**inp, speaker_mask=halves_mask(2, 3, 4, 4))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_wrong_speaker_mask_shape_is_a_clear_error():
    cfg = dit_preset("tiny")
    model = MagicInfiniteDiT(cfg)
    with pytest.raises(ValueError, match="token grid"):
        model(**tiny_inputs(cfg), speaker_mask=torch.ones(1, 2, 3, 8, 8))


def test_group_audio_by_latent_frame_alignment():
    feats = torch.arange(10.0)[:, None]  # video frame index as the feature
    grouped = group_audio_by_latent_frame(feats, frames_per_latent=4, window=5)  # [T_lat, 4, 5, 1]
    assert grouped.shape == (latent_frames(10), 4, 5, 1) == (4, 4, 5, 1)
    assert grouped[0, :, 2, 0].tolist() == [0, 0, 0, 0]  # latent 0 <-> video frame 0 alone
    assert grouped[1, :, 2, 0].tolist() == [1, 2, 3, 4]  # latent k <-> 4k-3..4k
    assert grouped[3, :, 2, 0].tolist() == [9, 9, 9, 9]  # frames past the end clamp to the last one
    assert grouped[1, 0, :, 0].tolist() == [0, 0, 1, 2, 3]  # +-2 window, clamped at the start


def test_concat_image_condition_layout():
    noisy = torch.randn(1, 4, 3, 2, 2)
    image = torch.randn(1, 4, 1, 2, 2)
    x = concat_image_condition(noisy, image)
    assert x.shape == (1, 9, 3, 2, 2)
    assert torch.equal(x[:, 4:8, 0], image[:, :, 0]) and x[:, 4:8, 1:].abs().sum() == 0
    assert x[:, 8, 0].eq(1).all() and x[:, 8, 1:].eq(0).all()
    assert concat_image_condition(noisy, None)[:, 4:].abs().sum() == 0


def test_save_load_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = MagicInfiniteDiT(dit_preset("tiny"))
    randomise_(model)
    path = save_dit(tmp_path / "m.safetensors", model)
    loaded = load_transformer(path)
    assert loaded.cfg == model.cfg
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    model = MagicInfiniteDiT(dit_preset("tiny"))
    sd = model.state_dict()
    sd["final_layer.linear.weight"] = torch.zeros(3, 3)
    with pytest.raises(
        CheckpointError, match=r"final_layer\.linear\.weight: file \(3, 3\) vs model \(16, 128\)"
    ):
        load_into(model, sd)


def test_missing_and_unexpected_keys_are_named():
    model = MagicInfiniteDiT(dit_preset("tiny"))
    sd = model.state_dict()
    del sd["time_in.mlp.0.weight"]
    sd["bogus.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"missing 1 keys: time_in\.mlp\.0\.weight.*unexpected 1 keys: bogus\.weight"
    ):
        load_into(model, sd)


def test_stage1_checkpoint_loads_into_audio_model_with_zero_audio(tmp_path):
    cfg = dit_preset("tiny")
    stage1 = MagicInfiniteDiT(cfg.without_audio())
    randomise_(stage1)
    path = save_dit(tmp_path / "stage1.safetensors", stage1)
    with pytest.raises(CheckpointError, match="missing"):
        load_transformer(path, cfg)
    model = load_transformer(path, cfg, allow_missing_audio=True)
    assert all(
        torch.equal(p, torch.zeros_like(p))
        for n, p in model.named_parameters()
        if n.startswith("audio_") and n.endswith("proj.weight")
    )


def test_pickle_and_corrupt_files_are_refused(tmp_path):
    bad = tmp_path / "m.pt"
    bad.write_bytes(b"\x80\x04junk")
    with pytest.raises(CheckpointError, match="only .safetensors"):
        load_transformer(bad)
    path = save_state_dict(tmp_path / "t.safetensors", {"a": torch.zeros(1000)}, kind="test")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.safetensors"):
        load_transformer(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_transformer(tmp_path / "nope.safetensors")


def test_one_denoising_step_of_a_33_frame_window_on_cpu():
    """Batch 1, 33 video frames (9 latent frames) at 64x64: the tiny model's sliding window."""
    from magicinfinite_core.sampling import schedule as scheduler

    cfg = dit_preset("tiny")
    torch.manual_seed(0)
    model = MagicInfiniteDiT(cfg).eval()
    g = torch.Generator().manual_seed(0)
    a = cfg.audio
    noisy = torch.randn(1, cfg.out_channels, latent_frames(33), 8, 8, generator=g)
    image = torch.randn(1, cfg.out_channels, 1, 8, 8, generator=g)
    sigmas = scheduler.flow_sigmas(4)
    with torch.inference_mode():
        v = model(
            concat_image_condition(noisy, image),
            scheduler.timestep_from_sigma(sigmas[0]).expand(1),
            torch.randn(1, 8, cfg.text_dim, generator=g),
            None,
            torch.randn(1, cfg.pooled_dim, generator=g),
            audio=torch.randn(1, 1, 9, a.frames_per_latent, a.frame_window, a.feature_dim, generator=g),
            speaker_mask=torch.ones(1, 1, 9, 4, 4),
        )
    x = scheduler.euler_step(noisy, v, float(sigmas[0]), float(sigmas[1]))
    assert x.shape == noisy.shape and torch.isfinite(x).all()


def test_vec_bias_starts_at_zero_and_moves_only_its_channels_by_one_number_per_sample(tmp_path):
    """`DiTConfig.vec_bias_channels` (the demo's expression channel read from the prompt): added to a trained model
    it changes nothing; trained, it moves only its channels, by the same amount at every position of a sample, and
    the amount depends on the pooled text; it survives a save and load; a channel the model does not write is refused."""
    from dataclasses import replace

    from magicinfinite_core.models.dit import with_vec_bias

    cfg = DiTConfig()
    model = MagicInfiniteDiT(cfg).eval()
    randomise_(model, seed=1)
    inputs = tiny_inputs(cfg)
    inputs["speaker_mask"] = halves_mask(2, 3, 4, 4)
    biased = with_vec_bias(model, (1,)).eval()
    with torch.no_grad():
        before = model(**inputs)
        assert torch.equal(biased(**inputs), before)
        biased.vec_bias.weight.normal_(generator=torch.Generator().manual_seed(2))
        after = biased(**inputs)
        other = biased(**{**inputs, "pooled": inputs["pooled"] + 1.0})
    change = after - before
    assert torch.equal(change[:, [0, 2, 3]], torch.zeros_like(change[:, [0, 2, 3]]))
    per_patch = change[0, 1].reshape(3, 4, 2, 4, 2)  # one number per position within a 1x2x2 patch
    assert torch.allclose(per_patch, per_patch[:1, :1, :, :1, :].expand_as(per_patch), atol=1e-5)
    assert float(per_patch.abs().max()) > 0 and not torch.allclose(other[:, 1], after[:, 1])
    save_dit(tmp_path / "b.safetensors", biased)
    with torch.no_grad():
        assert torch.allclose(load_transformer(tmp_path / "b.safetensors").eval()(**inputs), after, atol=1e-4)
    with pytest.raises(ValueError, match="vec_bias_channels"):
        replace(cfg, vec_bias_channels=(cfg.out_channels,))


def test_vec_bias_from_the_pooled_text_reads_the_prompt_alone():
    """`vec_bias_input` "pooled": the bias is a linear readout of the pooled text embedding, so it moves with the prompt
    and not with the noise level (the conditioning vector's timestep); it starts at zero; other inputs are refused."""
    from dataclasses import replace

    from magicinfinite_core.models.dit import with_vec_bias

    cfg = DiTConfig()
    model = MagicInfiniteDiT(cfg).eval()
    randomise_(model, seed=1)
    inputs = tiny_inputs(cfg)
    inputs["speaker_mask"] = halves_mask(2, 3, 4, 4)
    biased = with_vec_bias(model, (1,), "pooled").eval()
    assert biased.cfg.vec_bias_input == "pooled" and biased.vec_bias.in_features == cfg.pooled_dim
    with torch.no_grad():
        assert torch.equal(biased(**inputs), model(**inputs))
        biased.vec_bias.weight.normal_(generator=torch.Generator().manual_seed(2))

        def added(**changes):
            kw = {**inputs, **changes}
            return biased(**kw) - model(**kw)

        here = added()
        later = added(timestep=inputs["timestep"] * 0.5)
        other_prompt = added(pooled=inputs["pooled"] + 1.0)
    assert float(here[:, 1].abs().max()) > 0 and torch.equal(here[:, [0, 2, 3]], torch.zeros_like(here[:, [0, 2, 3]]))
    assert torch.allclose(here, later, atol=1e-5)  # (a velocity model: the head's output is what the bias adds to)
    assert not torch.allclose(other_prompt[:, 1], here[:, 1])
    with pytest.raises(ValueError, match="vec_bias_input"):
        replace(cfg, vec_bias_channels=(1,), vec_bias_input="text")
