"""The recommend API's Prometheus metrics: the re-ranker's figures and the API's on one registry per app."""
import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from serving.metrics import RerankMetrics, ServingMetrics, counts
from serving.rerank.llm_client import Completion


def scrape(metrics: ServingMetrics) -> dict:
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_the_rerankers_figures_are_served_with_the_apis():
    rerank = RerankMetrics()
    metrics = ServingMetrics(rerank)
    rerank.record_call("ok", Completion("{}", None, "stop", prompt_tokens=100, completion_tokens=20, latency_ms=300.0))
    rerank.record_call("error", None)
    rerank.results.labels("applied").inc()
    metrics.observe_request({"total": 12.0}, "personal", [], "applied", feature_age_s=None, cache_age_s=None)
    got = scrape(metrics)
    latency = "streamrec_llm_latency_seconds"
    assert got[(f"{latency}_bucket", (("le", "0.25"),))] == 0
    assert got[(f"{latency}_bucket", (("le", "0.5"),))] == got[(f"{latency}_bucket", (("le", "+Inf"),))] == 1
    assert got[(f"{latency}_count", ())] == 1 and abs(got[(f"{latency}_sum", ())] - 0.3) < 1e-9
    assert got[("streamrec_llm_calls_total", (("outcome", "ok"),))] == 1
    assert got[("streamrec_llm_calls_total", (("outcome", "error"),))] == 1
    assert got[("streamrec_llm_tokens_total", (("kind", "prompt"),))] == 100
    assert got[("streamrec_rerank_results_total", (("status", "applied"),))] == 1
    assert got[("streamrec_recommend_requests_total", (("path", "personal"),))] == 1
    assert counts(rerank.llm_calls) == {"ok": 1, "error": 1}
    assert counts(rerank.llm_tokens) == {"prompt": 100, "completion": 20}


def test_two_apps_in_one_process_keep_their_own_counts_in_feasts_multiprocess_mode(tmp_path):
    # What importing feast does (feast.metrics sets PROMETHEUS_MULTIPROC_DIR before prometheus_client is imported):
    # values then live in files keyed by metric name and labels, shared by every app of the process.
    code = """
from serving.metrics import RerankMetrics, ServingMetrics, counts
a, b = RerankMetrics(), RerankMetrics()
api_a, api_b = ServingMetrics(a), ServingMetrics(b)
for rerank, api, n in ((a, api_a, 3), (b, api_b, 1)):
    for _ in range(n):
        rerank.record_call("ok", None)
        api.requests.labels("personal").inc()
print(counts(a.llm_calls)["ok"], counts(b.llm_calls)["ok"], counts(api_a.requests)["personal"],
      counts(api_b.requests)["personal"])
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120, env=env).stdout
    assert [float(x) for x in out.split()] == [3, 1, 3, 1]
