"""The recommend API under abuse, on the real serving stack: who may read whom, what an anonymous
caller learns, bounded requests, one id rule with ingest, plain-text reasons, a fair LLM queue.
Each test is one finding of the security probe (issue 11)."""
from __future__ import annotations

import json
import time

import jwt
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from streamrec.auth import load_secret
from streamrec.config import Settings
from streamrec.events import InvalidEvent, parse_event
from streamrec.http_limits import MAX_QUERY_BYTES
from tests.fixtures.fake_llm import candidate_ids
from tests.fixtures.serving_stack import stack_settings
from tests.helpers import BAD_IDS, assert_eventually, bearer, raw_request, serving

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(serving_stack, _fake_llm_server) -> Settings:
    return stack_settings(serving_stack, _fake_llm_server.base_url, llm__enabled=False)


@pytest.fixture(scope="module")
def anonymous(settings):
    with TestClient(create_app(settings)) as client:
        yield client


def get(client: TestClient, path: str, headers: dict | None = None, **params):
    return client.get(path, params=params, headers=headers or {})


def test_auth_is_on_unless_switched_off():
    assert Settings().auth.enabled is True


def test_reading_needs_a_token_for_that_user(anonymous, settings, serving_stack):
    alice, bob = serving_stack.user_ids[:2]
    missing = get(anonymous, "/recommend", user_id=alice, k=2)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "missing bearer token" in missing.json()["detail"]

    as_alice = bearer(settings, "recommend:read", user=alice)
    assert get(anonymous, "/recommend", as_alice, user_id=alice, k=2).status_code == 200
    other = get(anonymous, "/recommend", as_alice, user_id=bob, k=2)  # the probe read any user's titles
    assert other.status_code == 403 and f"user {alice!r} only" in other.json()["detail"]

    service = bearer(settings, "recommend:any", name="web")
    assert get(anonymous, "/recommend", service, user_id=bob, k=2).status_code == 200
    writer = get(anonymous, "/recommend", bearer(settings, "events:write"), user_id=bob, k=2)
    assert writer.status_code == 403


def test_tokens_not_signed_here_or_expired_are_refused(anonymous, settings, serving_stack):
    user = serving_stack.user_ids[0]
    claims = {"iss": "streamrec", "sub": user, "scope": "recommend:any", "iat": int(time.time()),
              "exp": int(time.time()) + 600, "user": False}
    forged = jwt.encode(claims, "x" * 32, algorithm="HS256")
    expired = jwt.encode({**claims, "exp": int(time.time()) - 1}, load_secret(settings), algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    for token, says in ((forged, "Signature verification failed"), (expired, "expired"), (unsigned, "invalid token")):
        r = get(anonymous, "/recommend", {"Authorization": f"Bearer {token}"}, user_id=user)
        assert r.status_code == 401 and says in r.json()["detail"]


def test_metrics_and_health_details_need_ops_read(anonymous, settings):
    assert get(anonymous, "/metrics").status_code == 401
    assert get(anonymous, "/metrics", bearer(settings, "recommend:any")).status_code == 403
    assert get(anonymous, "/metrics", bearer(settings, "ops:read")).status_code == 200
    # The probe read the model version, the LLM model and counters from the open /healthz.
    assert get(anonymous, "/healthz").json() == {"status": "ok"}
    details = get(anonymous, "/healthz", bearer(settings, "ops:read")).json()
    assert set(details["checks"]) >= {"feature_store", "model_server", "llm"}


def test_auth_switched_off_lets_anyone_in_and_declares_no_scheme(serving_stack, _fake_llm_server):
    off = stack_settings(serving_stack, _fake_llm_server.base_url, llm__enabled=False, auth__enabled=False)
    with TestClient(create_app(off)) as client:
        assert get(client, "/recommend", user_id=serving_stack.user_ids[0], k=1).status_code == 200
        spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    assert "401" not in spec["paths"]["/recommend"]["get"]["responses"]


def test_openapi_declares_the_bearer_scheme_and_its_answers(anonymous):
    spec = anonymous.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in ("/recommend", "/metrics"):
        op = spec["paths"][path]["get"]
        assert op["security"] == [{"HTTPBearer": []}] and {"401", "403"} <= set(op["responses"])


@pytest.mark.parametrize("case", BAD_IDS, ids=list(BAD_IDS))
def test_ingest_and_the_api_refuse_the_same_ids(anonymous, settings, case):
    value, reason = BAD_IDS[case]
    event = {"event_id": "6f1c2a9e-1b2c-4d3e-8f4a-0123456789ab", "event_type": "click", "user_id": value,
             "item_id": "i1", "ts": int(time.time() * 1000), "device": "tv", "session_id": "s1"}
    with pytest.raises(InvalidEvent) as err:
        parse_event(json.dumps(event))
    assert err.value.reason == reason
    r = get(anonymous, "/recommend", bearer(settings, "recommend:any"), user_id=value)
    if len(value) > MAX_QUERY_BYTES:
        assert r.status_code == 414
    else:
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "user_id"]


def test_a_long_query_gets_a_clear_414(settings, serving_stack):
    with serving(create_app(settings)) as (host, port):
        answer = raw_request(host, port, f"GET /recommend?user_id={serving_stack.user_ids[0]}&q={'x' * 100_000} "
                                         "HTTP/1.1\r\nHost: x\r\n\r\n")  # the probe's 100 KB
    assert answer.startswith("HTTP/1.1 414") and "at most 8192" in answer


def test_reasons_are_plain_text_whatever_the_llm_says(serving_stack, fake_llm):
    hostile = "i99999 <script>alert(1)</script> Great pick"
    fake_llm.answer(lambda body: json.dumps({"ranking": [{"id": i, "reason": f"{hostile} ({i})"}
                                                         for i in candidate_ids(body)]}))
    listwise = stack_settings(serving_stack, fake_llm.base_url, llm__mode="listwise")
    with TestClient(create_app(listwise), headers=bearer(listwise, "recommend:any")) as client:
        body = get(client, "/recommend", user_id=serving_stack.user_ids[3], k=5).json()
    assert body["rerank"]["status"] == "applied"
    for item in body["items"]:
        assert "<" not in item["reason"] and "script" not in item["reason"] and "i99999" not in item["reason"]
        assert item["item_id"] not in item["reason"] and "Great pick" in item["reason"]


def test_one_caller_cannot_starve_the_llm_queue(serving_stack, fake_llm):
    fake_llm.hold()  # a local LLM answers in ~10 s: calls stay pending
    settings = stack_settings(serving_stack, fake_llm.base_url, llm__budget_ms=50)
    attacker, victim = serving_stack.user_ids[4:6]
    with TestClient(create_app(settings)) as client:
        as_attacker = bearer(settings, "recommend:read", user=attacker)
        statuses = [get(client, "/recommend", as_attacker, user_id=attacker, k=2, q=f"something {n}").json()["rerank"]["status"]
                    for n in range(10)]  # the probe's ten distinct requests
        assert statuses[0] == "timeout" and set(statuses[1:]) == {"busy"}
        assert len(fake_llm.received()) == 1
        victim_status = get(client, "/recommend", bearer(settings, "recommend:read", user=victim),
                            user_id=victim, k=2, q="a comedy").json()["rerank"]["status"]
        assert victim_status == "timeout"  # its own call, not rerank_overloaded

        def victim_asked():
            assert len(fake_llm.received()) == 2

        assert_eventually(victim_asked, timeout_s=10)
        fake_llm.release()
