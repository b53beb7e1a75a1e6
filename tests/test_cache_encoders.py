"""The 13B model's encoders in the preprocessing cache: LLaVA + CLIP text (I2V template with the
portrait) and wav2vec2 features, with tiny randomly initialised models in the real formats."""

from __future__ import annotations

import pytest
import torch

from tests.test_text_encoders import folders  # noqa: F401  (tiny LLaVA + CLIP folders, module fixture)
from training.cache_encoders import EncoderSpec

pytest.importorskip("ray")


def test_missing_encoder_files_are_named_with_what_to_pass(tmp_path, capsys):
    from training.preprocess import main

    (tmp_path / "data").mkdir()
    (tmp_path / "vae.safetensors").write_bytes(b"x")
    rc = main(["--data", str(tmp_path / "data"), "--vae", str(tmp_path / "vae.safetensors"), "--out",
               str(tmp_path / "out"), "--text-encoder", "hunyuan", "--audio-encoder", "wav2vec2"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs --llava FOLDER" in err and "needs --clip FOLDER" in err and "needs --wav2vec2 PATH" in err
    assert not (tmp_path / "out").exists()
    assert EncoderSpec().problems() == [] and EncoderSpec().text_label == "minilm"


@pytest.mark.slow
def test_a_hunyuan_wav2vec2_cache_holds_llava_tokens_and_wav2vec2_features(folders, tmp_path):  # noqa: F811
    from magicinfinite_core.config import VAEConfig
    from magicinfinite_core.distributed.ray_runtime import init_ray
    from magicinfinite_core.media.autoencoders import save_autoencoder as save_vae
    from magicinfinite_core.media.vae import VideoVAE
    from magicinfinite_core.weights.checkpoints import load_state_dict
    from tests.audio_fixtures import tiny_wav2vec2
    from training.data.clip import make_clip, save_clip
    from training.data.render import WorldConfig
    from training.data.speech import espeak_available
    from training.preprocess import preprocess

    if not espeak_available():
        pytest.skip("espeak-ng is needed to build world clips")
    tiny_wav2vec2().save_pretrained(str(tmp_path / "w2v"))
    torch.manual_seed(0)
    vae = save_vae(tmp_path / "vae.safetensors", VideoVAE(VAEConfig(spatial_compression_ratio=4)))
    save_clip(make_clip(0, "train", 9, WorldConfig(32, 32, 0.3, 0.4, 1, 0.0)), tmp_path / "data" / "c0")
    spec = EncoderSpec("hunyuan", "wav2vec2", str(folders / "llava"), str(folders / "clip"), str(tmp_path / "w2v"))
    ray = init_ray(num_cpus=2)
    try:
        manifest = preprocess([tmp_path / "data"], vae, tmp_path / "cache", encoders=spec, threads=1, log_every=0)
    finally:
        ray.shutdown()
    clip = load_state_dict(manifest.parent / "c0.safetensors")
    null = load_state_dict(manifest.parent / "null_text.safetensors")
    assert clip["text_tokens"].shape == null["text_tokens"].shape == (1024, 32)  # LLaVA hidden 32, padded
    assert clip["text_mask"].sum() > null["text_mask"].sum() > 0  # the portrait's image tokens + the prompt
    assert clip["pooled"].shape == (24,)  # CLIP-L pooled (tiny: 24)
    assert clip["audio"].shape == (3, 4, 5, 2 * 64)  # wav2vec2: layers x hidden per frame
    settings = (manifest.parent / "cache.json").read_text()
    assert '"text_encoder": "hunyuan:llava+clip"' in settings and '"audio_extractor": "wav2vec2:w2v"' in settings
