"""The re-ranker's contract against the real embedded LLM (llama-server + the installed weights),
through the project's own prompt, schema, validation and intent scoring."""
from __future__ import annotations

import dataclasses

import pytest

from benchmarks.llm import CATALOG, CONTEXTS
from infra import llm, process
from serving.rerank.context import Candidate
from serving.rerank.reranker import Reranker
from streamrec.config import Settings
from tests.helpers import free_port

_MISSING = llm.missing()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(_MISSING), reason=f"embedded LLM not installed ({'; '.join(_MISSING)}): {llm.INSTALL_HINT}"),
]


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    s = Settings(data_dir=str(tmp_path_factory.mktemp("rerank-contract")))
    s.serving.rerank_cache = "memory"  # every test asks the LLM, whatever a shared cache holds
    s.llm.port = free_port()
    svc = llm.llm_service(s)
    process.start(svc)
    yield s
    process.stop(svc)


def comedies_last() -> list[Candidate]:
    """W&D order with every comedy at the bottom, so only the re-rank can lift them."""
    ordered = sorted(CATALOG, key=lambda row: "Comedy" in row[2])
    n = len(ordered)
    return [Candidate(i, t, g, 2000, float(m), round(1 - k / n, 4), 0.5) for k, (i, t, g, m) in enumerate(ordered)]


def mean_rank(ids: list[str], genre: str) -> float:
    genres = {row[0]: row[2] for row in CATALOG}
    ranks = [r for r, item_id in enumerate(ids) if genre in genres[item_id]]
    return sum(ranks) / len(ranks)


@pytest.mark.parametrize("decoder", ["scored", "generated"])
def test_intent_something_funny_lifts_comedies(settings, decoder):
    candidates = comedies_last()
    llm_settings = dataclasses.replace(settings.llm, mode="intent", intent_decoder=decoder)
    with Reranker(dataclasses.replace(settings, llm=llm_settings)) as reranker:
        result = reranker.refresh("contract-user", candidates, CONTEXTS[0], q="something funny")
    assert result.status == "applied", result.status  # parsed, valid, within llm.timeout_seconds
    ids = [item.item_id for item in result.items]
    assert sorted(ids) == sorted(c.item_id for c in candidates)  # a permutation of the candidates, nothing else
    before = mean_rank([c.item_id for c in candidates], "Comedy")
    assert mean_rank(ids, "Comedy") < before - 5  # direction, not exact order


def test_listwise_answer_holds_only_candidate_ids(settings):
    candidates = comedies_last()[:6]  # a short list keeps the small model's answer within the timeout
    with Reranker(dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, mode="listwise"))) as reranker:
        result = reranker.refresh("contract-user", candidates, CONTEXTS[0], q="something funny and short")
    assert result.status in ("applied", "invalid_output", "empty"), result.status  # an answer came, in time
    assert sorted(item.item_id for item in result.items) == sorted(c.item_id for c in candidates)


def test_the_stack_can_tell_which_weights_the_server_runs(settings):
    assert llm.serves_configured_model(settings)
    other = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, embedded_model="smollm2-135m"))
    assert not llm.serves_configured_model(other)
