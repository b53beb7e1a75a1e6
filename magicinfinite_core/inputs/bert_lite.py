"""A plain-torch BERT encoder + `tokenizers` tokenizer for the demo's MiniLM prompt encoder.

Why: `transformers` takes seconds to import (its BertModel pulls in most of the library), longer
than the whole first second of a streamed video; the demo only needs MiniLM-L6's forward pass. This
is that forward (embeddings, post-LN attention blocks with exact GELU) reading the same
`model.safetensors`, and the same `tokenizer.json` through the Rust `tokenizers` package (imports in
milliseconds). Outputs match `transformers.AutoModel` to float32 rounding
(tests/test_streaming_live.py compares them).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


class BertLite(torch.nn.Module):
    """`last_hidden_state` of a BERT encoder (`config.json` + `model.safetensors` of a HF folder)."""

    def __init__(self, folder: str | Path, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        folder = Path(folder)
        cfg = json.loads((folder / "config.json").read_text())
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{folder}: BertLite runs BERT models with exact GELU only")
        self.heads, self.eps = int(cfg["num_attention_heads"]), float(cfg.get("layer_norm_eps", 1e-12))
        self.hidden_size = int(cfg["hidden_size"])
        self.layers = int(cfg["num_hidden_layers"])
        sd = {k.removeprefix("bert."): v.to(dtype) for k, v in load_file(str(folder / "model.safetensors")).items()}
        self.w = torch.nn.ParameterDict({k.replace(".", "__"): torch.nn.Parameter(v, requires_grad=False)
                                         for k, v in sd.items() if k != "embeddings.position_ids"})

    def _p(self, name: str) -> torch.Tensor:
        return self.w[name.replace(".", "__")]

    def _ln(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), self._p(name + ".weight"), self._p(name + ".bias"), self.eps)

    def _lin(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self._p(name + ".weight"), self._p(name + ".bias"))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        b, n = input_ids.shape
        e = "embeddings."
        x = (self._p(e + "word_embeddings.weight")[input_ids] + self._p(e + "position_embeddings.weight")[:n][None]
             + self._p(e + "token_type_embeddings.weight")[0])
        x = self._ln(x, e + "LayerNorm")
        keep = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]: attend to real tokens only
        d = self.hidden_size // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(b, n, self.heads, d).transpose(1, 2)

            q, k, v = (split(self._lin(x, p + f"attention.self.{m}")) for m in ("query", "key", "value"))
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(b, n, -1)
            x = self._ln(self._lin(ctx, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = F.gelu(self._lin(x, p + "intermediate.dense"))
            x = self._ln(self._lin(h, p + "output.dense") + x, p + "output.LayerNorm")
        return x


class FastTokenizer:
    """`tokenizer.json` through `tokenizers`: (input_ids, attention_mask) like a HF fast tokenizer call."""

    def __init__(self, folder: str | Path) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self.pad_id = 0
        pad = self.tok.padding
        if pad is not None:
            self.pad_id = int(pad.get("pad_id", 0))

    def __call__(self, prompts: list[str], max_length: int, pad_to_max_length: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        self.tok.enable_truncation(max_length=max_length)
        self.tok.enable_padding(pad_id=self.pad_id, length=max_length if pad_to_max_length else None)
        enc = self.tok.encode_batch(list(prompts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask
