"""Pseudonymization at the edge (issue 16, privacy): with ``privacy.pseudonymize`` the SDK publishes, and the
API reads, serves and logs, pseudonyms only; the raw id reaches no topic."""
from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from streamrec.config import PrivacyConfig
from streamrec.pseudonyms import pseudonymizer
from streams.kafka_util import read_topic
from streams.producer import EventProducer
from tests.fixtures.serving_stack import stack_settings
from tests.integration.test_recommend_api import client_for, publish_feature_row, recommend

pytestmark = pytest.mark.integration


def _event(user: str, **changes) -> dict:
    return {"event_id": str(uuid.uuid4()), "event_type": "watch", "user_id": user, "item_id": "i1",
            "ts": "2026-11-29T10:00:00Z", "device": "tv", "session_id": "s1", "watch_seconds": 60, **changes}


def test_the_sdk_publishes_and_dead_letters_pseudonyms_only(kafka_settings):
    settings = dataclasses.replace(kafka_settings, privacy=PrivacyConfig(pseudonymize=True))
    hide = pseudonymizer(settings)
    with EventProducer(settings) as producer:
        assert producer.send(_event("alice@example.com")).accepted
        assert producer.validate(json.dumps(_event("carol"))).user_id == hide("carol")
        assert not producer.send(_event("bob", watch_seconds=-1)).accepted
        assert not producer.send(b"[not an object]").accepted

    cfg = settings.kafka
    (event,) = read_topic(cfg, cfg.events_topic)
    assert event.key == hide("alice@example.com").encode()
    assert json.loads(event.value)["user_id"] == hide("alice@example.com") and b"alice" not in event.value
    dead = sorted(read_topic(cfg, cfg.dlq_topic), key=lambda r: r.value)
    assert [r.value for r in dead][0] == b"[not an object]"
    assert json.loads(dead[1].value)["user_id"] == hide("bob") and b"bob" not in dead[1].value
    assert dict(dead[1].headers)["reason"] == b"negative_watch_time"


def test_the_api_serves_the_pseudonyms_features_and_logs_only_it(serving_stack, kafka_settings, fake_llm):
    from features.store import FeatureStoreClient

    settings = stack_settings(serving_stack, fake_llm.base_url, privacy__pseudonymize=True, llm__enabled=False)
    settings.kafka = kafka_settings.kafka
    user = serving_stack.user_ids[5]
    hidden = pseudonymizer(settings)(user)
    with client_for(settings) as client:
        # The stack's rows are under the raw id, which the API no longer reads: a stranger.
        before = recommend(client, user_id=user, k=5)
        assert before["cold_start"] is True and before["user_id"] == user
        (row,) = FeatureStoreClient(settings).online_features([user])
        publish_feature_row(settings, {**row, "user_id": hidden})
        after = recommend(client, user_id=user, k=5)
        assert after["cold_start"] is False and after["features"]["found"] is True and after["user_id"] == user
        assert client.get("/ui/config").json()["users"] == []  # no names to pick from, only pseudonyms

    exposures = list(read_topic(settings.kafka, settings.kafka.exposures_topic))
    assert len(exposures) == 2 and {r.key for r in exposures} == {hidden.encode()}
    assert all(user.encode() not in r.value for r in exposures)
