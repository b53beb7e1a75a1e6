"""Text encoders: tiny random LLaVA + CLIP saved to disk (real loading code), and the packaged MiniLM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPTextModel, LlavaForConditionalGeneration

from magicinfinite_core.errors import CheckpointError
from magicinfinite_core.inputs import text_encoders as te

from .llava_fixtures import PROMPTS, write_clip_text, write_llava


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    d = tmp_path_factory.mktemp("te")
    write_llava(d / "llava", 32)
    write_clip_text(d / "clip", 24)
    return d


@pytest.fixture(scope="module")
def encoder(folders):
    return te.HunyuanTextEncoder(folders / "llava", folders / "clip", dtype=torch.float32, max_length=24)


def portraits(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (40, 36, 3), dtype=np.uint8) for _ in PROMPTS]


def test_i2v_encoding_matches_a_string_level_reference(encoder, folders):
    images = portraits(0)
    out = encoder.encode(PROMPTS, images)
    n_img = encoder.num_image_tokens // 2  # 16 tokens, every 2nd kept (latent-concat I2V)
    drop = len(encoder.tokenizer(te._ASSISTANT_HEADER, add_special_tokens=False)["input_ids"])
    assert out.tokens.shape == (2, n_img + 24 - drop, 32)
    assert out.mask.shape == out.tokens.shape[:2] and out.mask[:, :n_img].all()
    assert out.pooled.shape == (2, 24)

    # reference: expand <image> at the string level (as modern LLaVA processors do) and read the
    # states back by position, with the 3rd-from-last hidden state (skip 2 layers)
    tok, model = encoder.tokenizer, LlavaForConditionalGeneration.from_pretrained(str(folders / "llava"))
    crop = len(tok(te.I2V_TEMPLATE.split("{}")[0])["input_ids"])
    for b, prompt in enumerate(PROMPTS):
        text = te.I2V_TEMPLATE.format(prompt).replace("<image>", "<image>" * 16)
        ids = tok(text, return_tensors="pt")["input_ids"]
        px = encoder.image_processor([images[b]], return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            hs = model(input_ids=ids, pixel_values=px, output_hidden_states=True).hidden_states[-3][0]
        img_pos = (ids[0] == encoder.image_token_id).nonzero().flatten()
        assert torch.allclose(out.tokens[b, :n_img], hs[img_pos[::2]], atol=1e-5)
        user = tok(prompt, add_special_tokens=False)["input_ids"]
        start = crop + 15  # user text begins after the system part, shifted by the 15 extra image tokens
        assert ids[0, start : start + len(user)].tolist() == user
        n_real = int(out.mask[b, n_img:].sum())
        assert n_real == ids.shape[1] - start - drop  # user text + trailing "\n\n" of the assistant turn
        assert torch.allclose(
            out.tokens[b, n_img : n_img + len(user)], hs[start : start + len(user)], atol=1e-5
        )
        assert torch.allclose(out.tokens[b, n_img + n_real - 1], hs[-1], atol=1e-5)  # the final "\n\n"


def test_image_tokens_do_not_see_the_prompt_and_pooled_is_clip(encoder, folders):
    a = encoder.encode(PROMPTS, portraits(1))
    b = encoder.encode(PROMPTS[::-1], portraits(1))
    n_img = encoder.num_image_tokens // 2
    assert torch.allclose(a.tokens[0, :n_img], b.tokens[0, :n_img], atol=1e-6)  # causal LM: image first
    c = encoder.encode(PROMPTS, portraits(2))
    assert not torch.allclose(a.tokens[:, :n_img], c.tokens[:, :n_img])
    clip = CLIPTextModel.from_pretrained(str(folders / "clip"))
    tok = encoder.clip_tokenizer(
        PROMPTS, max_length=77, padding="max_length", truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        assert torch.allclose(a.pooled, clip(**tok).pooler_output, atol=1e-6)
    # ComfyUI IMAGE tensors ([B, H, W, 3] in 0..1) are accepted too
    t = torch.from_numpy(np.stack(portraits(1))).float() / 255
    d = encoder.encode(PROMPTS, t)
    assert torch.allclose(a.tokens, d.tokens, atol=1e-6)


def test_text_only_template_and_options(folders):
    enc = te.HunyuanTextEncoder(
        folders / "llava", folders / "clip", dtype=torch.float32, max_length=16, offload=True
    )
    out = enc.encode(["hello there"])
    assert out.tokens.shape == (1, 16, 32) and out.mask[0, 0] and not out.mask[0, -1]
    assert isinstance(enc, te.TextEncoder)
    with pytest.raises(ValueError, match="one image per prompt"):
        enc.encode(PROMPTS, portraits(0)[:1])
    if __import__("importlib").util.find_spec("bitsandbytes") is None:
        with pytest.raises(CheckpointError, match="pip install bitsandbytes"):
            te.HunyuanTextEncoder(folders / "llava", folders / "clip", quantization="8bit")
    with pytest.raises(CheckpointError, match="no config.json"):
        te.HunyuanTextEncoder(folders, folders / "clip")


def test_minilm_demo_encoder_offline():
    enc = te.MiniLMTextEncoder()
    out = enc.encode(["a man is talking", "a person speaks", "a red car drives on the highway at night"])
    assert out.tokens.shape[0] == 3 and out.tokens.shape[2] == 384 and out.pooled.shape == (3, 384)
    assert out.mask.dtype == torch.bool and out.mask[0].sum() < out.mask[2].sum()
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = out.pooled @ out.pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # real pretrained weights: paraphrases are closer
    assert isinstance(enc, te.TextEncoder)
    assert Path(te.minilm_path(), "model.safetensors").is_file()


def test_avatar_encoding_matches_a_string_level_reference(folders):
    """HunyuanVideo-Avatar: T2V template + suffix with <image>, system part cropped, all image tokens in place."""
    encoder = te.HunyuanTextEncoder(folders / "llava", folders / "clip", dtype=torch.float32, max_length=40)
    images = portraits(3)
    out = encoder.encode_avatar(PROMPTS, images)
    n_img, crop = encoder.num_image_tokens, len(encoder.tokenizer(te.T2V_TEMPLATE.split("{}")[0])["input_ids"])
    assert out.tokens.shape == (2, 40 + n_img - 1, 32) and out.pooled.shape == (2, 24)
    model = LlavaForConditionalGeneration.from_pretrained(str(folders / "llava"))
    for b, prompt in enumerate(PROMPTS):
        text = te.avatar_prompt_text(prompt).replace("<image>", "<image>" * n_img)
        ids = encoder.tokenizer(text, return_tensors="pt")["input_ids"]
        px = encoder._pixels([images[b]], square=True)
        # squashed to the tower's square (the reference's Resize((336, 336))), not centre-cropped
        square = np.asarray(Image.fromarray(images[b]).resize((32, 32), Image.BILINEAR))
        by_hand = encoder.image_processor([square], do_resize=False, do_center_crop=False, return_tensors="pt")
        assert (px - by_hand["pixel_values"]).abs().mean() < 0.05
        with torch.no_grad():
            hs = model(input_ids=ids, pixel_values=px, output_hidden_states=True).hidden_states[-3][0]
        n = ids.shape[1] - crop  # real tokens after the crop: prompt, suffix, the image tokens last
        assert int(out.mask[b].sum()) == n and out.mask[b, :n].all()
        assert torch.allclose(out.tokens[b, :n], hs[crop:], atol=1e-5)
    with pytest.raises(ValueError, match="longer than 40 tokens"):
        encoder.encode_avatar(["talks " * 40], images[:1])
