"""Prometheus metrics of the recommend API, its refresh worker and the re-ranker, on one registry per app.

A registry per app (not the global one) lets tests and benchmarks build several apps in
one process. The re-ranker's figures (results, LLM call latency, outcomes, tokens) count
every caller: API requests, the worker's refreshes, benchmarks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from streamrec.prometheus import single_process_values

if TYPE_CHECKING:  # the re-ranker imports this module
    from serving.rerank.llm_client import Completion

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Stage latencies: fine steps around the 20 ms goal, then coarse ones up to a slow LLM budget.
STAGE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Feature age (request time - the user's last event): seconds to a day.
AGE_BUCKETS_S = (1, 5, 15, 60, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)
LLM_LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RerankMetrics:
    """The re-ranker's figures, on a registry of their own (``registry``) that ``ServingMetrics`` adds the API's to."""

    def __init__(self) -> None:
        single_process_values()  # else, once feast is imported, every app of a process counts the others' calls
        self.registry = CollectorRegistry()
        r = self.registry
        self.results = Counter(
            "streamrec_rerank_results", "Re-rank results by status (API requests and worker refreshes)",
            ["status"], registry=r)
        self.llm_calls = Counter(
            "streamrec_llm_calls", "LLM re-rank calls by outcome (ok or a failure status)", ["outcome"], registry=r)
        self.llm_latency = Histogram(
            "streamrec_llm_latency_seconds", "Latency of answered LLM re-rank calls (API and worker)",
            buckets=LLM_LATENCY_BUCKETS_S, registry=r)
        self.llm_tokens = Counter("streamrec_llm_tokens", "LLM tokens used, by kind", ["kind"], registry=r)
        self.cache_errors = Counter(
            "streamrec_rerank_cache_errors", "Shared re-rank cache (Redis) operations that failed, by op: get (served "
            "as a miss), put (dropped), decode (an unreadable entry, a miss)", ["op"], registry=r)

    def record_call(self, outcome: str, completion: Completion | None) -> None:
        """One LLM call; ``completion``: its answer, None when there was none (no latency or tokens to count)."""
        self.llm_calls.labels(outcome).inc()
        if completion is not None:
            self.llm_latency.observe(completion.latency_ms / 1000.0)
            self.llm_tokens.labels("prompt").inc(completion.prompt_tokens)
            self.llm_tokens.labels("completion").inc(completion.completion_tokens)


def counts(counter: Counter) -> dict[str, float]:
    """A one-label counter's totals by label value, for those counted so far (what benchmarks and tests read)."""
    return {next(iter(s.labels.values())): s.value
            for family in counter.collect() for s in family.samples if s.name == f"{family.name}_total"}


class ServingMetrics:
    def __init__(self, rerank: RerankMetrics):
        # The re-ranker's registry: one per app, so /metrics serves its figures with the API's.
        self.registry = rerank.registry
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
        self.exposures = Counter(
            "streamrec_exposures", "Served lists logged to kafka.exposures_topic, by outcome (sent: acknowledged; "
            "failed: the broker refused or timed out; dropped: the producer's queue was full)", ["outcome"], registry=r)
        self.worker_lag = Histogram(
            "streamrec_rerank_worker_lag_seconds", "Context change to re-rank ready: the user's last event time to the "
            "end of the worker's refresh for it (applied or cached)", buckets=AGE_BUCKETS_S, registry=r)

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

