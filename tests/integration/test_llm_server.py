"""The embedded LLM as the code uses it: llama-server started through infra.llm, on the real
weights, spoken to with the openai client. Needs ``infra/install_llm.sh`` to have run."""
from __future__ import annotations

import json

import pytest

from infra import llm, process
from serving.rerank import endpoint
from streamrec.config import Settings
from tests.helpers import free_port

_MISSING = llm.missing()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(_MISSING), reason=f"embedded LLM not installed ({'; '.join(_MISSING)}): {llm.INSTALL_HINT}"),
]

@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from openai import OpenAI

    settings = Settings(data_dir=str(tmp_path_factory.mktemp("llm")))
    settings.llm.port = free_port()
    assert endpoint.is_embedded(settings)
    svc = llm.llm_service(settings)
    process.start(svc)
    try:
        base_url, api_key, model = endpoint.resolve_endpoint(settings)
        # A contract test, not a speed test: on 2 shared cores an answer can take tens of seconds.
        yield OpenAI(base_url=base_url, api_key=api_key, timeout=300, max_retries=0), model
    finally:
        process.stop(svc)


def _json_chat(client, model: str, system: str, user: str, schema: dict) -> dict:
    resp = client.chat.completions.create(
        model=model,
        temperature=0,
        max_tokens=96,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
    )
    return json.loads(resp.choices[0].message.content)


def _id_list(allowed: list[str], max_items: int) -> dict:
    return {"type": "array", "items": {"type": "string", "enum": allowed}, "minItems": 1, "maxItems": max_items}


def test_models_lists_the_alias(client):
    openai_client, model = client
    assert model == endpoint.embedded_model().alias
    assert model in [m.id for m in openai_client.models.list().data]


def test_json_schema_restricts_ids_to_the_candidates(client):
    openai_client, model = client
    candidates = {"m1": "The Hangover (Comedy)", "m2": "Alien (Horror, Sci-Fi)", "m3": "Superbad (Comedy)",
                  "m4": "Heat (Action, Crime)", "m5": "Toy Story (Animation, Children, Comedy)"}
    schema = {"type": "object", "properties": {"item_ids": _id_list(list(candidates), 3)},
              "required": ["item_ids"], "additionalProperties": False}
    answer = _json_chat(
        openai_client, model,
        "Pick the candidate ids that best fit the viewer's request. Answer with JSON only.",
        "Request: something funny\nCandidates:\n" + "\n".join(f"{k}: {v}" for k, v in candidates.items()),
        schema,
    )
    assert set(answer) == {"item_ids"}
    assert 1 <= len(answer["item_ids"]) <= 3
    assert set(answer["item_ids"]) <= set(candidates)


def test_a_prefilled_answer_is_continued_with_top_logprobs(client):
    """What the scored intent decoder relies on: the server continues the final assistant message and
    returns the next token's alternatives."""
    from serving.rerank.llm_client import LLMClient

    openai_client, model = client
    llm_client = LLMClient(str(openai_client.base_url), "sk-no-key-required", model, timeout_s=300)
    messages = [{"role": "system", "content": "Classify the request into a JSON object with a genre."},
                {"role": "user", "content": "I want a comedy tonight"}]
    top = llm_client.next_tokens(messages, '{"genre": "').top
    assert len(top) >= 5
    pieces = [piece.lower() for piece, _ in top]
    # the continuation of the prefill, not a fresh answer starting with "{"
    assert not any(p.startswith("{") for p in pieces[:3]), pieces
    assert any("comedy".startswith(p) for p in pieces[:3] if p), pieces
