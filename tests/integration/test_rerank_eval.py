"""``streamrec evaluate --rerank``, reduced: one tiny world, one seed, a handful of sessions, intent mode, against
the embedded LLM (llama-server + the installed weights, started through infra like the other LLM tests).

It checks the harness, not the lift: the report is written, every session got a decision or an honest fallback
status, the metrics are finite and in [0, 1], and W&D's NDCG is what its stored order gives."""
from __future__ import annotations

import json
import math

import pytest

from infra import llm
from models.cli import register
from serving.rerank.reranker import STATUSES
from serving.rerank_eval.run import RerankOptions, run_rerank_evaluation
from streamrec.errors import UserError
from tests.fixtures.feast import sqlite_settings
from tests.helpers import run_cli

_MISSING = llm.missing()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(_MISSING), reason=f"embedded LLM not installed ({'; '.join(_MISSING)}): {llm.INSTALL_HINT}"),
]

SESSIONS = 6
OPTIONS = RerankOptions(seeds=(5,), modes=("intent",), max_sessions=SESSIONS, users=60, items=120, days=4.0,
                        holdout_days=1.0, progress=False)


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return sqlite_settings(tmp_path_factory.mktemp("rerank-eval"))


@pytest.fixture(scope="module")
def report(settings, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    # As the CLI does: the embedded server on a free port, stopped afterwards.
    with llm.embedded_server(settings, "rerank-eval-llm") as llm_settings:
        summary = run_rerank_evaluation(llm_settings, out, OPTIONS)
    return out, summary


def ndcg10(order: list[str], relevant: list[str]) -> float:
    """Recomputed here from the definition, not through the harness's code."""
    dcg = sum(1 / math.log2(r + 2) for r, item in enumerate(order[:10]) if item in relevant)
    ideal = sum(1 / math.log2(r + 2) for r in range(min(len(relevant), 10)))
    return dcg / ideal


def test_report_files_are_written(report):
    out, summary = report
    assert (out / "rerank.md").is_file()
    stored = json.loads((out / "rerank.json").read_text())
    assert stored["modes"].keys() == summary["modes"].keys() >= {"intent"}
    assert "intent" in (out / "rerank.md").read_text()


def test_every_session_got_a_decision_or_an_honest_fallback(report):
    _, summary = report
    rows = [r for r in summary["sessions"] if r["mode"] == "intent"]
    assert 1 <= len(rows) <= SESSIONS
    assert all(r["status"] in STATUSES for r in rows)
    assert rows[0]["called"]  # the first session of a prompt makes the call
    for r in rows:
        assert sorted(r["reranked_order"]) == sorted(r["wd_order"])  # a permutation of the candidates
        if not r["applied"]:
            assert r["reranked_order"] == r["wd_order"]  # a fallback is the W&D order
    block = summary["modes"]["intent"]
    assert block["calls"]["count"] == sum(r["called"] for r in rows) >= 1
    assert block["latency"]["calls"] == block["calls"]["count"]
    assert sum(block["statuses"].values()) == len(rows)


def test_metrics_are_finite_and_in_range(report):
    _, summary = report
    for mode, block in summary["modes"].items():
        for metric, lift in block["overall"].items():
            for value in (lift["base"], lift["treated"]):
                assert math.isfinite(value) and 0.0 <= value <= 1.0, (mode, metric, value)
            assert lift["diff_ci"][0] <= lift["diff"] <= lift["diff_ci"][1] or math.isclose(*lift["diff_ci"])


def test_wide_deep_ndcg_is_what_its_stored_order_gives(report):
    _, summary = report
    rows = [r for r in summary["sessions"] if r["mode"] == "intent"]
    recomputed = [ndcg10(r["wd_order"], r["relevant"]) for r in rows]
    assert [r["wd_ndcg@10"] for r in rows] == pytest.approx(recomputed)
    assert summary["modes"]["intent"]["overall"]["ndcg@10"]["base"] == pytest.approx(sum(recomputed) / len(rows))
    reranked = [ndcg10(r["reranked_order"], r["relevant"]) for r in rows]
    assert summary["modes"]["intent"]["overall"]["ndcg@10"]["treated"] == pytest.approx(sum(reranked) / len(rows))


@pytest.mark.parametrize("argv, message", [
    (["--world", "/tmp"], "--rerank generates its own worlds"),
    (["--rerank-modes", "pointwise"], "unknown mode"),
    (["--seeds", "1,x"], "comma-separated integers"),
    (["--seeds", "1,1"], "repeats a seed"),
    (["--rerank-sessions", "0"], "at least 1"),
    (["--world-days", "2", "--holdout-days", "2"], "--holdout-days must be"),
])
def test_bad_options_say_what_is_wrong(argv, message, tmp_path):
    with pytest.raises(UserError, match=message):
        run_cli(register, sqlite_settings(tmp_path), "evaluate", "--rerank", *argv)
