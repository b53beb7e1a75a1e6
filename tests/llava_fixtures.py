"""Tiny random HunyuanVideo text encoders saved as transformers folders (tests only).

`write_llava(folder, width)`: a LLaVA (llama + CLIP vision tower) with a byte-level BPE tokenizer trained on
the prompt templates and llama-3's special tokens, and its image processor; `write_clip_text(folder, width)`:
a CLIP text model with its tokenizer. Both load offline through the real transformers code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
)

from magicinfinite_core.inputs import text_encoders as te

SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<image>",
    "<pad>",
]
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
    r"\s*[\r\n]+|\s+(?!\S)|\s+"
)
PROMPTS = ["a woman talks to the camera and smiles", "an old man speaking slowly in a quiet room"]


def tiny_tokenizer(bos: str, eos: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the templates, pre-tokenised like llama-3 (its split regex), with
    llama-3's special tokens as single tokens."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    corpus = [te.I2V_TEMPLATE, te.T2V_TEMPLATE, te.avatar_prompt_text(""), te.AVATAR_NEGATIVE, *PROMPTS] * 3
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A" if bos != eos else f"{bos} $A {eos}",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token="<pad>",
        additional_special_tokens=SPECIAL,
    )


def write_llava(folder: str | Path, width: int = 32, seed: int = 0) -> Path:
    """A tiny LLaVA-llama folder: hidden size `width`, 4 layers, a 32 px vision tower of 16 tokens."""
    folder = Path(folder)
    torch.manual_seed(seed)
    tok = tiny_tokenizer("<|begin_of_text|>", "<|eot_id|>")
    cfg = LlavaConfig(
        text_config=LlamaConfig(
            vocab_size=len(tok),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            pad_token_id=tok.pad_token_id,
        ),
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=16,
        projector_hidden_act="gelu",
    )
    LlavaForConditionalGeneration(cfg).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(folder)
    )
    return folder


def write_clip_text(folder: str | Path, width: int = 24, seed: int = 0) -> Path:
    """A tiny CLIP text model folder (hidden size `width`) with its tokenizer."""
    folder = Path(folder)
    torch.manual_seed(seed)
    ctok = tiny_tokenizer("<|begin_of_text|>", "<|end_of_text|>")
    clip_cfg = CLIPTextConfig(
        vocab_size=len(ctok),
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        eos_token_id=ctok.eos_token_id,
        bos_token_id=ctok.bos_token_id,
        pad_token_id=ctok.pad_token_id,
    )
    CLIPTextModel(clip_cfg).save_pretrained(str(folder))
    ctok.save_pretrained(str(folder))
    return folder
