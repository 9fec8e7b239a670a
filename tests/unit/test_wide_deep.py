"""The Wide & Deep model: both variants build over the named inputs, unknown ids are scored from their features,
training is repeatable, and the exported SavedModel (and model.keras) score exactly like the Keras model."""
from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from features.user_state import FEATURE_COLUMNS
from models.example_set import ExampleSet
from models.examples import (
    RANK_SIGNATURE,
    SHARE_COLUMNS,
    RequestContext,
    context_inputs,
    input_spec,
    item_frame,
    item_inputs,
    model_inputs,
    request_inputs,
    serving_inputs,
)
from models.export import KERAS_FILE, METADATA, export_model, next_version
from models.train import fit
from models.wide_deep import OUTPUT, WideDeep, WideDeepConfig, build_model
from streamrec.vocabulary import GENRES

T0 = 1_767_830_400_000  # 2026-01-08T00:00Z, a Thursday
ITEMS = [{"item_id": f"i{n}", "genres": [GENRES[n % len(GENRES)], GENRES[(3 * n) % len(GENRES)]][: 1 + n % 2],
          "year": 1980 + n, "duration_minutes": 80.0 + 3 * n, "popularity": 0.2 + n / 7} for n in range(20)]
USERS = ["u0", "u1", "u2"]
SMALL = WideDeepConfig(embedding_dim=4, hidden=(8,), epochs=1, batch_size=16)
DTYPES = {"string": tf.string, "float32": tf.float32, "int64": tf.int64}


def session(user: str, n: int) -> dict:
    return {"user_id": user, f"aff_{'comedy' if n % 2 else 'drama'}": 0.3 + n, "events_total": 3 + n,
            "session_events": n,
            "session_length_s": 60.0 * n, "last_items": [f"i{n}", f"i{n + 1}"][: 1 + n % 2],
            "last_event_ts_ms": T0 + n * 60_000, "prev_gap_s": 12.0 * n}


def batch(user: str = "u1", n: int = 1, live: bool = True, items=ITEMS) -> dict[str, np.ndarray]:
    profile = {"profile_events": 10 * n, "share_comedy": 0.5, "share_action": 0.5}
    context = RequestContext(user, T0 + 3_600_000 * (n + 18), "tv")
    return serving_inputs(session(user, n), items, profile, context, live=live)


def scores(model, inputs) -> np.ndarray:
    return np.asarray(model(inputs, training=False)).ravel()


@pytest.fixture(scope="module")
def built() -> dict[bool, WideDeep]:
    keras.utils.set_random_seed(0)
    item_ids = [i["item_id"] for i in ITEMS]
    return {live: build_model(USERS, item_ids, live, batch(live=live), SMALL) for live in (True, False)}


@pytest.fixture(scope="module")
def models(built) -> dict[bool, keras.Model]:
    return {live: wide_deep.model for live, wide_deep in built.items()}


@pytest.mark.parametrize("live", [True, False])
def test_both_variants_take_their_named_inputs_and_give_a_probability(built, live):
    model = built[live].model
    spec = input_spec(live)
    assert set(model.input) == set(spec)
    for name, (dtype, width) in spec.items():
        assert model.input[name].dtype == dtype and model.input[name].shape == (None, width), name
    assert built[live].core.get_layer(OUTPUT) is not None
    out = scores(model, batch(live=live))
    assert out.shape == (len(ITEMS),) and ((out > 0) & (out < 1)).all()
    if not live:
        assert not {"affinity", "device", "daypart", "last_items", "time_since_last_event_s"} & set(model.input)


def test_unknown_users_and_items_are_scored_from_their_features(models):
    model = models[True]
    assert np.array_equal(scores(model, batch("stranger")), scores(model, batch("another stranger")))
    renamed = [{**item, "item_id": f"new-{item['item_id']}"} for item in ITEMS]
    unknown = scores(model, batch(items=renamed))
    assert np.array_equal(unknown, scores(model, batch(items=[{**i, "item_id": "x" + i["item_id"]} for i in renamed])))
    assert not np.array_equal(unknown, scores(model, batch()))  # known ids do carry their embeddings


def training_examples(seed: int) -> ExampleSet:
    """Every user with every item, random labels; the request rows as Feast's join gives them (every column, None
    where a user has no value)."""
    rng = np.random.default_rng(seed)
    blank = dict.fromkeys([*FEATURE_COLUMNS, *SHARE_COLUMNS, "profile_events"])
    requests = pd.DataFrame([
        {**blank, **session(user, n), "profile_events": 5 * n, "share_drama": 1.0, "group": n, "item_id": "i0",
         "device": "phone", "event_timestamp": pd.Timestamp(T0 + 7_200_000 * (n + 1), unit="ms", tz="UTC")}
        for n, user in enumerate(USERS)
    ])
    request_row, item_row = np.divmod(np.arange(len(USERS) * len(ITEMS)), len(ITEMS))
    return ExampleSet(requests, item_frame(ITEMS), request_row, item_row,
                      (rng.random(len(request_row)) < 0.3).astype(np.float32))


def test_training_is_repeatable_for_a_seed():
    examples, item_ids = training_examples(0), [i["item_id"] for i in ITEMS]
    first, _ = fit(examples, item_ids, live=True, config=SMALL, seed=3, progress=False)
    again, metrics = fit(examples, item_ids, live=True, config=SMALL, seed=3, progress=False)
    other, _ = fit(examples, item_ids, live=True, config=SMALL, seed=4, progress=False)
    assert set(metrics) == {"loss", "auc"} and np.isfinite(metrics["loss"])
    np.testing.assert_array_equal(scores(first.model, batch()), scores(again.model, batch()))
    assert not np.array_equal(scores(first.model, batch()), scores(other.model, batch()))


@pytest.mark.parametrize("live", [True, False])
def test_scoring_encoded_tables_equals_the_model_on_raw_rows(live):
    """What training and evaluation run (the core on rows gathered from encoded request and item tables) is
    what serving runs (the model on the raw inputs of each pair), ids unknown to the vocabularies included."""
    examples = training_examples(1)
    wide_deep, _ = fit(examples, [i["item_id"] for i in ITEMS[:15]], live=live, config=SMALL, seed=0, progress=False)
    requests = examples.requests.assign(user_id=["u0", "u1", "stranger"])
    request_row, item_row = np.array([0, 2, 1, 1, 2]), np.array([3, 19, 0, 16, 7])
    encoded = wide_deep.score(wide_deep.encode(context_inputs(requests, "UTC", live)),
                              wide_deep.encode(item_inputs(examples.items)), request_row, item_row, chunk=2)
    pairs = dataclasses.replace(examples, requests=requests, request_row=request_row, item_row=item_row,
                                label=np.zeros(5, np.float32))
    raw = scores(wide_deep.model, model_inputs(pairs.frame(), "UTC", live))
    np.testing.assert_allclose(encoded, raw, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("live", [True, False])
def test_export_then_reload_scores_like_the_keras_model(models, live, tmp_path):
    model, inputs = models[live], batch(n=2, live=live)
    model_dir = tmp_path / "model_repo" / "wide_deep"

    version, path = export_model(model, model_dir, live, {"live": live, "seed": 0, "metrics": {"train": {"loss": 0.5}}})

    assert (version, path) == (1, model_dir / "1") and (path / "saved_model.pb").is_file()
    assert next_version(model_dir) == 2 and [p.name for p in model_dir.iterdir()] == ["1"]  # no staging dir left
    serving = tf.saved_model.load(str(path)).signatures["serving_default"]
    specs = serving.structured_input_signature[1]
    expected = {name: DTYPES[dtype] for name, (dtype, _) in input_spec(live).items()}
    assert {name: spec.dtype for name, spec in specs.items()} == expected
    assert list(serving.structured_outputs) == [OUTPUT]
    served = serving(**{name: tf.constant(value) for name, value in inputs.items()})[OUTPUT].numpy().ravel()
    np.testing.assert_allclose(served, scores(model, inputs), rtol=1e-6, atol=1e-7)
    reloaded = keras.saving.load_model(path / KERAS_FILE, compile=False)
    np.testing.assert_allclose(scores(reloaded, inputs), scores(model, inputs), rtol=1e-6, atol=1e-7)
    metadata = json.loads((path / METADATA).read_text())
    assert (metadata["version"], metadata["live"], metadata["signature"]) == (1, live, "serving_default")
    assert metadata["output"]["name"] == OUTPUT and metadata["metrics"] == {"train": {"loss": 0.5}}
    assert metadata["features"]["item_id"] == {"dtype": "string", "shape": [-1, 1]}
    assert set(metadata["features"]) == set(input_spec(live))

    assert export_model(model, model_dir, live, {})[0] == 2


@pytest.mark.parametrize("live", [True, False])
def test_the_rank_signature_scores_a_request_like_one_row_per_candidate(models, live, tmp_path):
    """The request's inputs once plus candidate ids give the scores of the full per-pair batch, the catalog's
    item features looked up inside the model; an id the catalog lacks is scored as an unknown item."""
    model = models[live]
    _, path = export_model(model, tmp_path / "wide_deep", live, {}, items=item_frame(ITEMS[:15]))
    rank = tf.saved_model.load(str(path)).signatures[RANK_SIGNATURE]
    candidates = [ITEMS[7], ITEMS[2], ITEMS[14], {"item_id": "not-in-catalog"}]
    profile = {"profile_events": 20, "share_comedy": 0.5, "share_action": 0.5}
    context = RequestContext("u1", T0 + 3_600_000 * 20, "tv")
    once = request_inputs(session("u1", 2), profile, context, live=live)
    assert all(value.shape[0] == 1 for value in once.values())
    ids = np.array([c["item_id"] for c in candidates], dtype=object)
    served = rank(**{name: tf.constant(v) for name, v in once.items()}, item_id=tf.constant(ids))[OUTPUT].numpy()
    expected = scores(model, serving_inputs(session("u1", 2), candidates, profile, context, live=live))
    assert served.shape == (4, 1)
    np.testing.assert_allclose(served.ravel(), expected, rtol=1e-6, atol=1e-7)
    assert json.loads((path / METADATA).read_text())["rank_signature"] == {"name": RANK_SIGNATURE, "catalog_items": 15}
