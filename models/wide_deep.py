"""Wide & Deep (Cheng et al. 2016) ranker: P(the user picks this item now), from named raw features.

Wide: one linear layer over the item's genres and exact crosses of them with categorical user state: the
profile's top genre and, live, the request's day-part, device, weekend, their joint context (what the world's
context rules key on) and the session's top decayed genre. The vocabularies are small and known (GENRES,
DAYPARTS, DEVICES), so an outer product of one-hots is the cross itself, without hash collisions.
Deep: an MLP over user and item embeddings (their product too), the mean embedding of the session's last items,
normalized genre affinities and their overlap with the item's genres, profile genre shares, and log-scaled
counts and times; logits add up, a sigmoid gives ``score``.

Everything from raw values to tensors happens inside the model (lookups, log scaling, normalization with
statistics taken from the training inputs), so a client sends ``models.examples.model_inputs`` as they are.
An id the vocabulary lacks (a new user or item) gets a zero embedding and is scored from its features alone.
``live=False`` builds the ablation: no context and no session inputs at all.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import keras
import numpy as np
from keras import layers, ops

from streamrec.vocabulary import DAYPARTS, DEVICES, GENRES
from models.examples import input_spec

OUTPUT = "score"
_N_GENRES = len(GENRES)


@dataclass(frozen=True)
class WideDeepConfig:
    embedding_dim: int = 16
    hidden: tuple[int, ...] = (64, 32)
    dropout: float = 0.1
    l2: float = 1e-5
    learning_rate: float = 2e-3
    batch_size: int = 512
    epochs: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


def input_layers(live: bool) -> dict[str, keras.KerasTensor]:
    """One named ``keras.Input`` per model input (serving-friendly dtypes: string, float32, int64)."""
    return {
        name: keras.Input(shape=(width,), dtype=dtype, name=name)
        for name, (dtype, width) in input_spec(live).items()
    }


def numeric_features(x: Mapping, live: bool):
    """The scalar inputs log-scaled where heavy-tailed, as one (batch, n) float tensor. Keras ops, so it runs on
    the model's symbolic inputs and, eagerly, on numpy arrays to take the normalization statistics."""
    def log1p(name):
        return ops.log1p(ops.maximum(ops.cast(x[name], "float32"), 0.0))

    columns = [
        ops.cast(x["year"], "float32"),
        ops.cast(x["duration_minutes"], "float32"),
        ops.log(ops.maximum(ops.cast(x["popularity"], "float32"), 1e-4)),
        log1p("profile_events"),
    ]
    if live:
        columns += [log1p(name) for name in
                    ("session_events", "session_length_s", "time_since_last_event_s", "prev_gap_s", "events_total")]
    return ops.concatenate(columns, axis=1)


def build_model(
    users: Sequence[str], items: Sequence[str], live: bool, stats_inputs: Mapping[str, np.ndarray],
    config: WideDeepConfig = WideDeepConfig(),
) -> keras.Model:
    """The compiled model. ``users``/``items``: the embedding vocabularies (ids seen in training, the catalog);
    ``stats_inputs``: model inputs (e.g. the training set's) to take the numeric features' mean and variance from."""
    x = input_layers(live)
    reg = keras.regularizers.L2(config.l2)

    genres = layers.StringLookup(vocabulary=list(GENRES), output_mode="multi_hot", mask_token="", name="genre_lookup")
    item_genres = ops.cast(genres(x["item_genres"])[:, 1:], "float32")  # column 0 counts unknown genre names
    shares = ops.cast(x["profile_shares"], "float32")

    user_emb = _embedding(x["user_id"], users, config, "user")
    item_lookup = layers.StringLookup(vocabulary=list(items), name="item_lookup")
    item_table = layers.Embedding(len(items) + 1, config.embedding_dim, embeddings_regularizer=reg,
                                  name="item_embedding")
    item_emb = _known_mean(item_lookup(x["item_id"]), item_table)

    numeric = numeric_features(x, live)
    stats = ops.convert_to_numpy(numeric_features(stats_inputs, live))
    norm = layers.Normalization(mean=stats.mean(axis=0), variance=np.maximum(stats.var(axis=0), 1e-6),
                                name="numeric_norm")

    wide = [item_genres, _outer(_top_genre(shares), item_genres)]
    deep = [user_emb, item_emb, user_emb * item_emb, norm(numeric), item_genres, shares, _overlap(shares, item_genres)]
    if live:
        daypart = _one_hot(x["daypart"], DAYPARTS, "daypart")
        device = _one_hot(x["device"], DEVICES, "device")
        is_weekend = ops.cast(x["is_weekend"], "float32")
        weekend = ops.concatenate([1.0 - is_weekend, is_weekend], axis=1)
        context = _outer(_outer(daypart, device), weekend)
        affinity = ops.cast(x["affinity"], "float32")
        affinity = affinity / ops.maximum(ops.sum(affinity, axis=1, keepdims=True), 1e-9)
        wide += [_outer(c, item_genres) for c in (daypart, device, weekend, context, _top_genre(affinity))]
        session_emb = _known_mean(item_lookup(x["last_items"]), item_table)
        deep += [session_emb, affinity, _overlap(affinity, item_genres), affinity * item_genres,
                 daypart, device, weekend]

    wide_logit = layers.Dense(1, kernel_regularizer=reg, name="wide")(ops.concatenate(wide, axis=1))
    h = ops.concatenate(deep, axis=1)
    for n, units in enumerate(config.hidden):
        h = layers.Dense(units, activation="relu", kernel_regularizer=reg, name=f"deep_{n}")(h)
        h = layers.Dropout(config.dropout)(h)
    deep_logit = layers.Dense(1, name="deep_out")(h)
    score = layers.Activation("sigmoid", name=OUTPUT)(wide_logit + deep_logit)

    model = keras.Model(x, score, name="wide_deep" if live else "wide_deep_no_live")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )
    return model


def _embedding(ids, vocabulary: Sequence[str], config: WideDeepConfig, name: str):
    lookup = layers.StringLookup(vocabulary=list(vocabulary), name=f"{name}_lookup")
    table = layers.Embedding(len(vocabulary) + 1, config.embedding_dim,
                             embeddings_regularizer=keras.regularizers.L2(config.l2), name=f"{name}_embedding")
    return _known_mean(lookup(ids), table)


def _known_mean(index, table):
    """Mean embedding over the known ids of each row; index 0 (unknown, or "" padding) counts as nothing, so a
    row of only unknown ids gets zeros, not the untrained out-of-vocabulary vector."""
    known = ops.cast(ops.greater(index, 0), "float32")
    total = ops.sum(table(index) * known[:, :, None], axis=1)
    return total / ops.maximum(ops.sum(known, axis=1, keepdims=True), 1.0)


def _one_hot(values, vocabulary: Sequence[str], name: str):
    """(batch, 1) strings -> (batch, 1 + len(vocabulary)) one-hot; column 0 is an unknown value."""
    lookup = layers.StringLookup(vocabulary=list(vocabulary), output_mode="one_hot", name=f"{name}_lookup")
    return ops.cast(lookup(values), "float32")


def _top_genre(weights):
    """One-hot of the largest genre weight over 1 + 18 columns; column 0 when every weight is 0 (no history)."""
    has_any = ops.cast(ops.sum(weights, axis=1) > 0, "int32")
    return ops.one_hot((ops.cast(ops.argmax(weights, axis=1), "int32") + 1) * has_any, _N_GENRES + 1)


def _outer(a, b):
    """Row-wise outer product, flattened: (batch, i) x (batch, j) -> (batch, i * j); with the item's genres, a
    cross: every (category, item genre) pair as one feature. A broadcast multiply: TF runs einsum as a batched
    matmul, ~5x the cost for factors this small."""
    return ops.reshape(a[:, :, None] * b[:, None, :], (-1, a.shape[1] * b.shape[1]))


def _overlap(weights, item_genres):
    """How much of a genre distribution falls on the item's genres."""
    return ops.sum(weights * item_genres, axis=1, keepdims=True)
