"""Prometheus metrics of the recommend API and its refresh worker, on a registry of their own.

A registry per app (not the global one) lets tests and benchmarks build several apps in
one process. The LLM's own figures (call latency, outcomes, tokens) are read from the
re-ranker's counters at scrape time, so they include the calls the worker makes.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from serving.rerank.reranker import RerankStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Stage latencies: fine steps around the 20 ms goal, then coarse ones up to a slow LLM budget.
STAGE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Feature age (request time - the user's last event): seconds to a day.
AGE_BUCKETS_S = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


class ServingMetrics:
    def __init__(self, rerank_stats: RerankStats):
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "streamrec_recommend_stage_seconds", "Time spent per /recommend stage (total: the whole request)",
            ["stage"], buckets=STAGE_BUCKETS_S, registry=r)
        self.requests = Counter(
            "streamrec_recommend_requests", "Answered /recommend requests by path (personal, cold_start)",
            ["path"], registry=r)
        self.fallbacks = Counter(
            "streamrec_recommend_fallbacks", "Requests served on a fallback, by reason (cold_start, "
            "model_unavailable, rerank_<status>)", ["reason"], registry=r)
        self.rerank = Counter(
            "streamrec_recommend_rerank", "Re-rank outcome of /recommend requests, by status", ["status"], registry=r)
        self.feature_age = Histogram(
            "streamrec_feature_age_seconds", "Age of the live features used: request time - the user's last event",
            buckets=AGE_BUCKETS_S, registry=r)
        self.cache_age = Histogram(
            "streamrec_rerank_cache_age_seconds", "Age of the cached re-ranks served (status cached)",
            buckets=AGE_BUCKETS_S, registry=r)
        self.worker_refreshes = Counter(
            "streamrec_rerank_worker_refreshes", "Re-ranks the worker refreshed, by re-rank status",
            ["status"], registry=r)
        self.worker_skips = Counter(
            "streamrec_rerank_worker_skips", "Feature rows the worker did not refresh for, by reason",
            ["reason"], registry=r)
        self.worker_lag = Histogram(
            "streamrec_rerank_worker_lag_seconds", "Context change to re-rank ready: the user's last event time to the "
            "end of the worker's refresh for it (applied or cached)", buckets=AGE_BUCKETS_S, registry=r)
        r.register(_LLMCollector(rerank_stats))

    def observe_request(self, timings_ms: dict[str, float], path: str, fallbacks: list[str], rerank_status: str,
                        feature_age_s: float | None, cache_age_s: float | None) -> None:
        for stage, ms in timings_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1000.0)
        self.requests.labels(path).inc()
        for reason in fallbacks:
            self.fallbacks.labels(reason).inc()
        self.rerank.labels(rerank_status).inc()
        if feature_age_s is not None:
            self.feature_age.observe(feature_age_s)
        if cache_age_s is not None:
            self.cache_age.observe(cache_age_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LLMCollector:
    """The re-ranker's in-process counters as Prometheus families, read at scrape time."""

    def __init__(self, stats: RerankStats):
        self.stats = stats

    def describe(self):
        return []  # the families are built at collect time; nothing to check at registration

    def collect(self):
        snap = self.stats.snapshot()
        hist = snap["llm_latency_ms"]
        buckets = [("+Inf" if le == float("inf") else str(le / 1000.0), count)
                   for le, count in zip(hist["le"], hist["counts"])]
        latency = HistogramMetricFamily(
            "streamrec_llm_latency_seconds", "Latency of answered LLM re-rank calls (API and worker)",
            buckets=buckets, sum_value=hist["sum"] / 1000.0)
        calls = CounterMetricFamily("streamrec_llm_calls", "LLM re-rank calls by outcome (ok or a failure status)",
                                    labels=["outcome"])
        for outcome, n in sorted(snap["calls"].items()):
            calls.add_metric([outcome], n)
        tokens = CounterMetricFamily("streamrec_llm_tokens", "LLM tokens used, by kind", labels=["kind"])
        for kind, n in sorted(snap["tokens"].items()):
            tokens.add_metric([kind], n)
        return [latency, calls, tokens]
