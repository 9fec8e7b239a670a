"""``streamrec train`` and ``streamrec evaluate`` end to end on a small synthetic world, with a real Feast in a
temp data dir, then the exported version served by the model server and scored through TF Serving's client.

The world's picks follow a session intent genre and context rules, so live session features must pay off:
Wide & Deep beats most-popular, and beats itself without live features, on NDCG@10 under leave-last-out.
"""
from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from features.offline import compute_features, read_event_log
from features.store import FeatureStoreClient
from infra import process
from infra.apps import model_server_service
from models.cli import register
from models.examples import RequestContext, serving_inputs
from models.export import KERAS_FILE, METADATA
from models.wide_deep import OUTPUT
from serving.tf_client import PredictClient
from streamrec.catalog import load_items
from streamrec.config import Settings
from streamrec.errors import UserError
from streams.generator import generate_world
from tests.fixtures.feast import sqlite_settings
from tests.helpers import free_port, run_cli

pytestmark = pytest.mark.integration

WORLD = {"users": 120, "items": 300, "days": 7, "seed": 11}
PNG = b"\x89PNG\r\n\x1a\n"


def cli(settings: Settings, *argv: str) -> int:
    return run_cli(register, settings, *argv)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, **WORLD)
    return out


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    return sqlite_settings(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def version_dir(world, settings):
    assert cli(settings, "train", "--world", str(world), "-q") == 0
    return settings.data_path / "model_repo" / settings.model.name / "1"


@pytest.fixture(scope="module")
def report(world, settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    assert cli(settings, "evaluate", "--world", str(world), "--out", str(out), "-q") == 0
    return out


@pytest.mark.parametrize("argv, message", [
    (["train", "--world", "{empty}"], "run `streamrec generate` first"),
    (["evaluate", "--data", "movielens-100k"], "needs --path"),
    (["evaluate", "--path", "{empty}"], "--path is for --data movielens"),
    (["evaluate", "--data", "movielens-100k", "--path", "{empty}"], "not an ml-100k directory: missing u.data"),
])
def test_data_options_say_what_is_missing(argv, message, tmp_path):
    with pytest.raises(UserError, match=message):
        cli(sqlite_settings(tmp_path / "data"), *(a.format(empty=tmp_path) for a in argv))


def test_train_exports_a_version_with_its_metadata(version_dir):
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / KERAS_FILE).is_file()
    metadata = json.loads((version_dir / METADATA).read_text())
    assert metadata["live"] is True and metadata["seed"] == 0 and metadata["output"]["name"] == OUTPUT
    data = metadata["training_data"]
    assert data["positives"] > 1000 and data["examples"] == data["positives"] * (1 + data["negatives_per_positive"])
    assert 0 < metadata["metrics"]["train"]["loss"] < 0.6  # a useful fit, not a stuck one (log 2 = 0.69)


def test_evaluation_puts_live_wide_and_deep_first(report):
    metrics = json.loads((report / "metrics.json").read_text())
    loo = {model: figures["ndcg@10"] for model, figures in metrics["protocols"]["loo"]["models"].items()}
    # Measured on this world: W&D 0.44, without live features 0.26, most-popular 0.17 (see the report).
    assert loo["wide-deep"] > loo["most-popular"] + 0.1
    assert loo["wide-deep"] > loo["wide-deep-no-live"] + 0.1
    full = metrics["protocols"]["full"]["models"]
    assert set(full) == set(loo) and all(0 < f["coverage@10"] <= 1 for f in full.values())
    assert len({f["n_users"] for f in full.values()}) == 1  # every model ranks the same users
    assert {"item-knn-all", "session-knn", "als", "sasrec"} <= set(loo)
    best = metrics["protocols"]["loo"]["best_baseline"]
    assert best not in ("wide-deep", "wide-deep-no-live") and metrics["seeds"] == [0]
    versus = metrics["protocols"]["loo"]["vs_best_baseline"]["wide-deep"]
    assert versus["diff"] == pytest.approx(loo["wide-deep"] - loo[best]) and versus["diff_ci"][0] < versus["diff"]
    text = (report / "report.md").read_text()
    assert "## Protocol `loo`" in text and "## Protocol `full`" in text and "| wide-deep-no-live |" in text
    assert f"to the best baseline, **{best}**" in text
    for plot in ("metrics_loo.png", "metrics_full.png", "ndcg_by_activity.png", "coverage.png"):
        assert (report / plot).read_bytes().startswith(PNG), plot
        assert f"]({plot})" in text


def test_the_served_model_scores_like_the_keras_model(version_dir, world, settings):
    # The recommend API's inputs: online rows from Feast, the user's session row as the stream leaves it.
    client = FeatureStoreClient(settings)
    events, items = list(read_event_log(world / "events.jsonl")), load_items(world / "items.jsonl")
    sessions = compute_features(events, items, settings.features).set_index("user_id")
    user = sessions.index[0]
    session = sessions.loc[user].to_dict() | {"user_id": user}
    candidates = client.item_features(sorted(items)[:50])
    (profile,) = client.profile_features([user])
    context = RequestContext(user, int(session["last_event_ts_ms"]) + 120_000, "tv", settings.features.timezone)
    inputs = serving_inputs(session, candidates, profile, context)
    expected = np.asarray(keras.saving.load_model(version_dir / KERAS_FILE, compile=False)(inputs)).ravel()

    served_settings = sqlite_settings(settings.data_dir)
    served_settings.model = dataclasses.replace(settings.model, grpc_port=free_port(), rest_port=free_port(),
                                                poll_seconds=0.2)
    svc = model_server_service(served_settings, version_dir.parent.parent)
    process.start(svc)
    try:
        with PredictClient(served_settings.model.host, served_settings.model.grpc_port, settings.model.name,
                           timeout_s=30) as tf_serving:
            meta = tf_serving.metadata()
            outputs = tf_serving.predict(inputs)
    finally:
        process.stop(svc)

    assert meta.version == 1 and set(meta.signatures["serving_default"].inputs) == set(inputs)
    assert set(outputs) == {OUTPUT} and outputs[OUTPUT].dtype == np.float32
    np.testing.assert_allclose(outputs[OUTPUT].ravel(), expected, rtol=1e-5, atol=1e-6)
    in_process = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    local = in_process(**{name: tf.constant(value) for name, value in inputs.items()})[OUTPUT].numpy().ravel()
    np.testing.assert_allclose(local, expected, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(expected, 5))) > 10  # candidates are told apart, not scored alike
