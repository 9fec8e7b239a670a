"""Both HTTP apps answer as their OpenAPI says: schemathesis generates requests from each schema
(valid ones and, by default, ones that break it) and checks every answer against it: no server
error, only documented statuses, bodies and content types as declared, auth enforced where declared.

Bounded (``EXAMPLES`` per operation) to keep ``make test`` short.
"""
from __future__ import annotations

import dataclasses
import uuid

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from serving.app import create_app
from streams.ingest_http import create_ingest_app
from streams.kafka_util import ensure_topics
from tests.fixtures.serving_stack import stack_settings
from tests.helpers import bearer

pytestmark = pytest.mark.integration

EXAMPLES = 40
# A request that breaks the schema must be refused with a 4xx; schemathesis' default list lacks
# 413, the right answer to more events than a batch may hold (the schema's maxItems).
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {
    "expected-statuses": [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]}}})
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                   suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def recommend_app(serving_stack, _fake_llm_server):
    config = stack_settings(serving_stack, _fake_llm_server.base_url)
    app = create_app(config)
    with TestClient(app):  # runs the app's start-up and shut-down
        yield app, bearer(config, "recommend:any", "ops:read")


@pytest.fixture(scope="module")
def ingest_app(broker_settings, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    kafka = dataclasses.replace(broker_settings.kafka, events_topic=f"events-{tag}", dlq_topic=f"dlq-{tag}")
    config = dataclasses.replace(broker_settings, kafka=kafka, data_dir=str(tmp_path_factory.mktemp("ingest")))
    ensure_topics(kafka)
    app = create_ingest_app(config)
    with TestClient(app):
        yield app, bearer(config, "events:write", "ops:read")


def conforms(app, headers: dict) -> None:
    """Every operation of ``app``'s OpenAPI, with requests that follow the schema and requests that break it."""
    # The schema is loaded here, not by schemathesis' pytest plugin: its lazy loader breaks on pytest 9.
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        # An operation without parameters or a body has no request to break.
        breakable = bool(operation.path_parameters or operation.query or operation.headers or operation.body)
        for mode in GenerationMode if breakable else [GenerationMode.POSITIVE]:
            @given(case=operation.as_strategy(generation_mode=mode))
            @BOUNDED
            def check(case):
                case.call_and_validate(headers=headers)

            check()


def test_recommend_api_answers_as_its_openapi_says(recommend_app):
    conforms(*recommend_app)


def test_ingest_answers_as_its_openapi_says(ingest_app):
    conforms(*ingest_app)
