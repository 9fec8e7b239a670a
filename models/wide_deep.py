"""Wide & Deep (Cheng et al. 2016) ranker: P(the user picks this item now), from named raw features.

Wide: one linear layer over the item's genres and exact crosses of them with categorical user state: the
profile's top genre and, live, the request's day-part, device, weekend, their joint context (what the world's
context rules key on) and the session's top decayed genre. The vocabularies are small and known (GENRES,
DAYPARTS, DEVICES), so an outer product of one-hots is the cross itself, without hash collisions; the linear
layer over a cross is computed as (c W) . g, never building the products.
Deep: an MLP over user and item embeddings (their product too), the mean embedding of the session's last items,
normalized genre affinities and their overlap with the item's genres, profile genre shares, and log-scaled
counts and times; logits add up, a sigmoid gives ``score``.

Everything from raw values to tensors happens inside the model (lookups, log scaling, normalization with
statistics taken from the training inputs), so a client sends ``models.examples.model_inputs`` as they are. The
model is a core over encoded inputs (vocabulary indices, multi-hots) behind the string lookups (``WideDeep``), so
training and offline scoring can encode each distinct request and item once.
An id the vocabulary lacks (a new user or item) gets a zero embedding and is scored from its features alone.
``live=False`` builds the ablation: no context and no session inputs at all.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import keras
import numpy as np
from keras import layers, ops

from models.examples import input_spec
from streamrec.vocabulary import DAYPARTS, DEVICES, GENRES

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


def input_layers(spec: Mapping[str, tuple[str, int | None]]) -> dict[str, keras.KerasTensor]:
    """One named ``keras.Input`` per entry of ``spec`` (name -> (dtype, width)): serving-friendly dtypes."""
    return {name: keras.Input(shape=(width,), dtype=dtype, name=name) for name, (dtype, width) in spec.items()}


def encoded_spec(live: bool) -> dict[str, tuple[str, int | None]]:
    """The core's inputs: the model's (``input_spec``) with each string input replaced by what its lookup gives,
    ids as int64 vocabulary indices (0: unknown) and the item's genres as a multi-hot over GENRES."""
    spec = input_spec(live)
    spec |= {name: ("int64", width) for name, (dtype, width) in spec.items() if dtype == "string"}
    return spec | {"item_genres": ("float32", _N_GENRES)}


# The scalar inputs, log-scaled where heavy-tailed, then normalized.
NUMERIC_INPUTS = ("year", "duration_minutes", "popularity", "profile_events")
LIVE_NUMERIC_INPUTS = ("session_events", "session_length_s", "time_since_last_event_s", "prev_gap_s", "events_total")


def numeric_features(x: Mapping, live: bool):
    """The scalar inputs (NUMERIC_INPUTS, and LIVE_NUMERIC_INPUTS if ``live``) as one (batch, n) float tensor.
    Keras ops, so it runs on the model's symbolic inputs and, eagerly, on numpy arrays to take the normalization
    statistics."""
    def log1p(name):
        return ops.log1p(ops.maximum(ops.cast(x[name], "float32"), 0.0))

    columns = [
        ops.cast(x["year"], "float32"),
        ops.cast(x["duration_minutes"], "float32"),
        ops.log(ops.maximum(ops.cast(x["popularity"], "float32"), 1e-4)),
        log1p("profile_events"),
    ]
    if live:
        columns += [log1p(name) for name in LIVE_NUMERIC_INPUTS]
    return ops.concatenate(columns, axis=1)


@dataclass(frozen=True)
class WideDeep:
    """A built model in its two parts. ``model`` takes the raw named inputs (``models.examples.model_inputs``) and
    is what serving and export use; it is ``core`` after ``encoders``. Training and offline scoring encode each
    distinct request and item once (``encode``) and run ``core`` on rows gathered from those tables
    (``score``), instead of repeating the string lookups of every row in every epoch."""

    model: keras.Model
    core: keras.Model  # encoded inputs (``encoded_spec``) -> score: what training fits (``trainer``)
    encoders: Mapping[str, Callable]  # raw input name -> its lookup; other inputs enter the core as they are

    def encode(self, inputs: Mapping[str, np.ndarray], chunk: int = 100_000) -> dict[str, np.ndarray]:
        """Raw named input arrays (any subset of the model's) as the core takes them."""
        out = {}
        for name, values in inputs.items():
            encoder = self.encoders.get(name)
            out[name] = values if encoder is None else np.concatenate(
                [ops.convert_to_numpy(encoder(values[lo:lo + chunk])) for lo in range(0, max(len(values), 1), chunk)])
        return out

    def trainer(self, config: WideDeepConfig, requests: Mapping[str, np.ndarray],
                items: Mapping[str, np.ndarray]) -> keras.Model:
        """The core compiled for training on (request row, item row) pairs of encoded tables (``encode``): a step
        gathers its batch's inputs from the tables, so examples are two row numbers each, not ~20 arrays. Its
        layers are ``model``'s; its optimizer stays out of the export."""
        rows = {name: keras.Input(shape=(1,), dtype="int64", name=name) for name in ("request_row", "item_row")}
        x = _TableRows(requests, name="requests")(rows["request_row"]) | _TableRows(items, name="items")(rows["item_row"])
        trainer = keras.Model(rows, self.core(x), name="trainer")
        trainer.compile(
            optimizer=keras.optimizers.Adam(config.learning_rate),
            loss="binary_crossentropy",
            metrics=[keras.metrics.AUC(name="auc")],
            # Never XLA (Keras' "auto" picks it for a core without string ops unless op determinism is on): on
            # this CPU it trained the core ~8x slower than plain TF.
            jit_compile=False,
            # Several small steps per call: the per-call overhead is most of a 512-row step's time.
            steps_per_execution=16,
        )
        return trainer

    def score(self, requests: Mapping[str, np.ndarray], items: Mapping[str, np.ndarray], request_row: np.ndarray,
              item_row: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """The score of each (``requests`` row, ``items`` row) pair, from encoded tables (``encode`` of
        ``models.examples.context_inputs`` and ``item_inputs``)."""
        scores = []
        for lo in range(0, len(request_row), chunk):
            x = {name: values[request_row[lo:lo + chunk]] for name, values in requests.items()}
            x |= {name: values[item_row[lo:lo + chunk]] for name, values in items.items()}
            # In chunks, so memory stays bounded however many pairs are asked.
            scores.append(np.asarray(self.core.predict_on_batch(x)).ravel())
        return np.concatenate(scores) if scores else np.zeros(0, np.float32)


class _TableRows(layers.Layer):
    """(batch, 1) row numbers -> the rows of fixed tables (name -> array) at those numbers."""

    def __init__(self, tables: Mapping[str, np.ndarray], **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.tables = {name: ops.convert_to_tensor(values) for name, values in tables.items()}

    def call(self, rows):
        return {name: ops.take(table, rows[:, 0], axis=0) for name, table in self.tables.items()}


def build_model(
    users: Sequence[str], items: Sequence[str], live: bool, stats_inputs: Mapping[str, np.ndarray],
    config: WideDeepConfig = WideDeepConfig(),
) -> WideDeep:
    """The model. ``users``/``items``: the embedding vocabularies (ids seen in training, the
    catalog); ``stats_inputs``: arrays of the numeric inputs (``NUMERIC_INPUTS``, and ``LIVE_NUMERIC_INPUTS`` if
    ``live``; e.g. the training set's) to take their mean and variance from."""
    encoders = {
        "user_id": layers.StringLookup(vocabulary=list(users), name="user_lookup"),
        "item_id": layers.StringLookup(vocabulary=list(items), name="item_lookup"),
        "item_genres": _multi_hot_genres(),
    }
    encoders["last_items"] = encoders["item_id"]  # one table: the session's items are catalog items
    if live:
        encoders |= {name: layers.StringLookup(vocabulary=list(vocabulary), name=f"{name}_lookup")
                     for name, vocabulary in (("daypart", DAYPARTS), ("device", DEVICES))}
    core = _core(len(users), len(items), live, stats_inputs, config)
    x = input_layers(input_spec(live))
    encoded = {name: encoders[name](tensor) if name in encoders else tensor for name, tensor in x.items()}
    model = keras.Model(x, core(encoded), name="wide_deep" if live else "wide_deep_no_live")
    return WideDeep(model, core, encoders)


def _core(n_users: int, n_items: int, live: bool, stats_inputs: Mapping[str, np.ndarray],
          config: WideDeepConfig) -> keras.Model:
    x = input_layers(encoded_spec(live))
    reg = keras.regularizers.L2(config.l2)

    item_genres = x["item_genres"]
    shares = ops.cast(x["profile_shares"], "float32")
    user_emb = _known_mean(x["user_id"], _table(n_users, config, "user"))
    item_table = _table(n_items, config, "item")
    item_emb = _known_mean(x["item_id"], item_table)

    numeric = numeric_features(x, live)
    stats = ops.convert_to_numpy(numeric_features(stats_inputs, live))
    norm = layers.Normalization(mean=stats.mean(axis=0), variance=np.maximum(stats.var(axis=0), 1e-6),
                                name="numeric_norm")

    crosses = {"profile_top_genre": _top_genre(shares)}
    deep = [user_emb, item_emb, user_emb * item_emb, norm(numeric), item_genres, shares, _overlap(shares, item_genres)]
    if live:
        daypart = _one_hot(x["daypart"], DAYPARTS)
        device = _one_hot(x["device"], DEVICES)
        is_weekend = ops.cast(x["is_weekend"], "float32")
        weekend = ops.concatenate([1.0 - is_weekend, is_weekend], axis=1)
        context = _outer(_outer(daypart, device), weekend)
        affinity = ops.cast(x["affinity"], "float32")
        affinity = affinity / ops.maximum(ops.sum(affinity, axis=1, keepdims=True), 1e-9)
        crosses |= {"daypart": daypart, "device": device, "weekend": weekend, "context": context,
                    "session_top_genre": _top_genre(affinity)}
        session_emb = _known_mean(x["last_items"], item_table)
        deep += [session_emb, affinity, _overlap(affinity, item_genres), affinity * item_genres,
                 daypart, device, weekend]

    # The wide part starts at zero, as a linear model would: a cross seen rarely in training keeps ~0, not noise.
    wide_logit = layers.Dense(1, kernel_initializer="zeros", kernel_regularizer=reg, name="wide")(item_genres)
    for name, category in crosses.items():
        wide_logit = wide_logit + _cross_logit(category, item_genres, reg, f"wide_{name}")
    h = ops.concatenate(deep, axis=1)
    for n, units in enumerate(config.hidden):
        h = layers.Dense(units, activation="relu", kernel_regularizer=reg, name=f"deep_{n}")(h)
        h = layers.Dropout(config.dropout)(h)
    deep_logit = layers.Dense(1, name="deep_out")(h)
    score = layers.Activation("sigmoid", name=OUTPUT)(wide_logit + deep_logit)

    return keras.Model(x, score, name="core")


def _multi_hot_genres() -> Callable:
    """Genre names (batch, any), padded with "" -> (batch, len(GENRES)) float multi-hot; unknown names count as
    nothing."""
    lookup = layers.StringLookup(vocabulary=list(GENRES), output_mode="multi_hot", mask_token="", name="genre_lookup")
    return lambda names: ops.cast(lookup(names)[:, 1:], "float32")  # column 0 counts unknown genre names


def _table(size: int, config: WideDeepConfig, name: str):
    """An embedding per vocabulary entry, row 0 for an unknown id."""
    return layers.Embedding(size + 1, config.embedding_dim, embeddings_regularizer=keras.regularizers.L2(config.l2),
                            name=f"{name}_embedding")


def _known_mean(index, table):
    """Mean embedding over the known ids of each row; index 0 (unknown, or "" padding) counts as nothing, so a
    row of only unknown ids gets zeros, not the untrained out-of-vocabulary vector."""
    known = ops.cast(ops.greater(index, 0), "float32")
    total = ops.sum(table(index) * known[:, :, None], axis=1)
    return total / ops.maximum(ops.sum(known, axis=1, keepdims=True), 1.0)


def _one_hot(index, vocabulary: Sequence[str]):
    """(batch, 1) vocabulary indices -> (batch, 1 + len(vocabulary)) one-hot; column 0 is an unknown value."""
    return ops.one_hot(ops.cast(index[:, 0], "int32"), len(vocabulary) + 1)


def _top_genre(weights):
    """One-hot of the largest genre weight over 1 + 18 columns; column 0 when every weight is 0 (no history)."""
    has_any = ops.cast(ops.sum(weights, axis=1) > 0, "int32")
    return ops.one_hot((ops.cast(ops.argmax(weights, axis=1), "int32") + 1) * has_any, _N_GENRES + 1)


def _cross_logit(category, item_genres, reg, name: str):
    """The wide logit of the crosses of a one-hot ``category`` c with the item's genres g: a linear layer over
    every (c_i, g_j) pair, sum_ij W_ij c_i g_j = (c W) . g, computed without building the |c| x |g| products
    (~2,000 floats a row for all crosses, which made the wide part most of the model's cost)."""
    weights = layers.Dense(_N_GENRES, use_bias=False, kernel_initializer="zeros", kernel_regularizer=reg,
                           name=name)(category)
    return ops.sum(weights * item_genres, axis=1, keepdims=True)


def _outer(a, b):
    """Row-wise outer product, flattened: (batch, i) x (batch, j) -> (batch, i * j); of one-hots, the one-hot of
    the pair (the joint context). A broadcast multiply: TF runs einsum as a batched matmul, ~5x the cost for
    factors this small."""
    return ops.reshape(a[:, :, None] * b[:, None, :], (-1, a.shape[1] * b.shape[1]))


def _overlap(weights, item_genres):
    """How much of a genre distribution falls on the item's genres."""
    return ops.sum(weights * item_genres, axis=1, keepdims=True)
