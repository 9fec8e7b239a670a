"""The LLM re-ranker: budget, background completion, cache and fallback around one LLM decision.

``rerank`` answers within ``llm.budget_ms`` (``llm.request_budget_ms`` when the request carries a
free-text ``q``: the viewer asked, so a decision is worth a wait). A cached answer is used at once
(``cached``): in intent mode, keyed by the intent prompt alone (``prompt.intent_key``: the coarse
situation and the request), so everyone in the same situation shares one decision; in listwise mode
by user, context signature, request and candidate set. Otherwise the decision runs on a small pool;
if it has not come in time the W&D order goes back now (``timeout``) and the call keeps running to
fill the cache for the next request. At most one call per cache key is in flight, and at most
``max_pending`` in all (beyond: ``overloaded``). So that no one caller fills that queue
(``fairness``), a request needing a new call while its user or its client (the authenticated
caller, or the remote address) has another one pending gets ``busy``, and a client starts at most
``llm_calls_per_minute`` new calls a minute (beyond: ``rate_limited``). Cache hits and joining the
call in flight for the same key cost nothing. Every failure (endpoint down, HTTP error, timeout,
invalid JSON, refusal, empty answer) degrades to the W&D order with its status;
``validate.complete_order`` makes sure only candidates come back, whatever the LLM said.

An intent is decided by ``llm.intent_decoder``: ``scored`` (``intent_scoring``: a token per field
read from the next-token probabilities, the default on the embedded server) or ``generated`` (the
model writes the JSON; any OpenAI-compatible endpoint).

Cached is the LLM's checked answer (an intent, or a listwise ranking), not the final list: an
intent is re-applied to the current candidates and context on every hit. The cache is this process's
memory or Redis (``serving.rerank_cache``, ``cache.backend``): with Redis every API replica and the
separate ``streamrec rerank-worker`` share one cache, and a decision made anywhere is ``cached`` everywhere.
Its entries are namespaced by what makes a decision (model, decoder, mode, prompt), so processes running
another prompt or model never serve each other's answers. At most one call per key is in flight per
process: two replicas missing the same key at once may both call.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, get_args

from serving.metrics import RerankMetrics
from serving.rerank.cache import Cache, RedisCache, TTLCache, backend, redis_client
from serving.rerank.context import (
    Candidate,
    LiveContext,
    candidate_set_hash,
    context_signature,
)
from serving.rerank.endpoint import is_embedded
from serving.rerank.fairness import FairQueue
from serving.rerank.intent import Intent, rescore
from serving.rerank.intent_scoring import context_masses, score_intent
from serving.rerank.llm_client import Completion, LLMClient, LLMError, NextTokens
from serving.rerank.prompt import (
    INTENT_SYSTEM,
    LISTWISE_SYSTEM,
    intent_key,
    intent_messages,
    listwise_messages,
    request_text,
)
from serving.rerank.schema import MAX_RANKED, intent_format, listwise_format
from serving.rerank.validate import (
    InvalidOutput,
    complete_order,
    parse_intent,
    parse_ranking,
)
from streamrec.config import LLMMode, Settings

log = logging.getLogger(__name__)

MODES = get_args(LLMMode)
STATUSES = ("applied", "cached", "timeout", "error", "invalid_output", "refusal", "empty", "overloaded", "busy",
            "rate_limited", "disabled")
APPLIED = ("applied", "cached")
# Outcomes as final for their key as an answer (decoding is greedy and seeded: asking again gives the same), so
# they are cached too and served as the W&D order with their status: a situation whose intent asks for nothing
# must not cost a call on every request and every worker refresh.
SETTLED = ("empty", "invalid_output")
# Output token caps: an intent is ~50 tokens; a listwise entry (id, reason) up to ~45.
INTENT_MAX_TOKENS = 120
LISTWISE_TOKENS_PER_ITEM = 48

Applicable = Intent | tuple[tuple[str, str], ...]  # an intent, or a ranking of (item id, reason)
Proposal = Applicable | str  # str: a SETTLED status
Priors = dict[str, dict[str, float]]  # intent_scoring.context_masses
# The key prefix of the shared cache; the rest of the namespace is a hash of what makes a decision.
REDIS_PREFIX = "streamrec:rerank"


def encode_proposal(proposal: Proposal) -> dict:
    """A proposal as JSON data for the shared cache (one tagged object per kind)."""
    if isinstance(proposal, Intent):
        return {"intent": dataclasses.asdict(proposal)}
    if isinstance(proposal, str):
        return {"settled": proposal}
    return {"ranking": [[item_id, reason] for item_id, reason in proposal]}


def decode_proposal(data: dict) -> Proposal:
    """``encode_proposal`` reversed; ``KeyError``/``TypeError``/``ValueError`` on anything else."""
    (kind, value), = data.items()
    if kind == "intent":
        return Intent(**value)
    if kind == "settled" and value in SETTLED:
        return value
    if kind == "ranking":
        return tuple((str(item_id), str(reason)) for item_id, reason in value)
    raise ValueError(f"not a re-rank proposal: {kind}={value!r}")


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class RankedItem:
    item_id: str
    rank: int  # 1-based
    score: float  # what the order was sorted by: W&D score (fallback), blended score (intent), 1 - (rank-1)/n (listwise)
    reason: str  # for the viewer; "" when there is none


@dataclass(frozen=True)
class RerankResult:
    items: tuple[RankedItem, ...]
    applied: bool  # True for "applied" and "cached"; else the W&D order
    status: str  # one of STATUSES
    latency_ms: float
    model: str
    mode: str
    intent: Intent | None = None  # intent mode, when applied
    cache_age_s: float | None = None  # "cached": how long ago the LLM answered


@dataclass(frozen=True)
class _Outcome:
    status: str  # "applied" or a failure status
    proposal: Applicable | None = None


def _scored_completion(calls: list[NextTokens]) -> Completion:
    """A scored decision's calls as one completion for the counters: a generated token per call."""
    return Completion(text=None, refusal=None, finish_reason="scored", prompt_tokens=sum(c.prompt_tokens for c in calls),
                      completion_tokens=len(calls), latency_ms=sum(c.latency_ms for c in calls))


class Reranker:
    def __init__(self, settings: Settings, *, workers: int = 2, max_pending: int = 8,
                 llm_calls_per_minute: int = 20, cache_entries: int = 10_000, cache_ttl_s: float = 900.0):
        """``llm_calls_per_minute``: new LLM calls a client may start per minute (0: no limit). ``cache_entries``
        bounds the in-process cache; in Redis the TTL alone bounds the entries."""
        llm = settings.llm
        self.mode = llm.mode
        self.decoder = llm.intent_decoder
        if self.decoder == "auto":
            self.decoder = "scored" if is_embedded(settings) else "generated"
        self.enabled = llm.enabled
        self.budget_s = llm.budget_ms / 1000.0
        self.request_budget_s = llm.request_budget_ms / 1000.0
        self._client = LLMClient.from_settings(settings) if self.enabled else None
        self.model = self._client.model if self._client else ""
        self.metrics = RerankMetrics()
        self.cache_backend = backend(settings)
        self._redis = redis_client(settings) if self.cache_backend == "redis" else None
        self._cache: Cache[Proposal] = self._make_cache("proposal", cache_entries, cache_ttl_s, encode_proposal,
                                                        decode_proposal)
        self._priors: Cache[Priors] = self._make_cache("prior", cache_entries, cache_ttl_s, _same, _same)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rerank")
        self._queue = FairQueue(max_pending, llm_calls_per_minute)

    def rerank(self, user_id: str, candidates: Sequence[Candidate], context: LiveContext,
               q: str | None = None, *, client: str | None = None) -> RerankResult:
        """The candidates (W&D order, best first) re-ranked within the budget, or as they are.

        ``client``: who asks (token subject or remote address), for fairness; None when unknown."""
        start = time.monotonic()
        candidates = list(candidates)
        if not self.enabled or not candidates:
            return self._fallback(candidates, "disabled" if not self.enabled else "empty", start)
        key = self._key(user_id, candidates, context, q)
        hit = self._cache.get(key)
        if hit is not None:
            return self._from_cache(hit, candidates, context, start)
        future = self._submit(user_id, client, key, candidates, context, q)
        if isinstance(future, str):  # refused: busy, overloaded or rate_limited
            return self._fallback(candidates, future, start)
        budget = self.request_budget_s if request_text(q) else self.budget_s
        try:
            outcome = future.result(timeout=max(budget - (time.monotonic() - start), 0.0))
        except TimeoutError:  # the call goes on in the background and fills the cache
            return self._fallback(candidates, "timeout", start)
        return self._from_outcome(outcome, candidates, context, start)

    def unranked(self, candidates: Sequence[Candidate]) -> RerankResult:
        """The W&D order, as when disabled (an experiment's variant without the re-rank)."""
        return self._fallback(list(candidates), "disabled", time.monotonic())

    def refresh(self, user_id: str, candidates: Sequence[Candidate], context: LiveContext,
                q: str | None = None, *, reuse: bool = False, wait_s: float | None = None) -> RerankResult:
        """Call the LLM now, without the budget, and cache the answer (the refresh worker, benchmarks).

        ``reuse``: a cached answer is served as it is (``cached``) and only a missing one costs a call: what
        the worker wants, as an intent is shared by everyone in the same situation. One pending call per user
        holds here too; the rate limit does not (the server's own work). ``wait_s``: give up waiting after this
        long (``timeout``; the call still fills the cache), so a stalled LLM cannot hold the worker."""
        start = time.monotonic()
        candidates = list(candidates)
        if not self.enabled or not candidates:
            return self._fallback(candidates, "disabled" if not self.enabled else "empty", start)
        key = self._key(user_id, candidates, context, q)
        hit = self._cache.get(key) if reuse else None
        if hit is not None:
            return self._from_cache(hit, candidates, context, start)
        future = self._submit(user_id, None, key, candidates, context, q, limited=False)
        if isinstance(future, str):
            return self._fallback(candidates, future, start)
        try:
            outcome = future.result(timeout=wait_s)
        except TimeoutError:  # the call goes on and fills the cache
            return self._fallback(candidates, "timeout", start)
        return self._from_outcome(outcome, candidates, context, start)

    def cache_state(self) -> dict:
        """The re-rank cache's backend and whether it answers (health checks)."""
        return self._cache.state()

    def close(self) -> None:
        """Drop queued calls and wait for running ones (bounded by ``llm.timeout_seconds``)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.clear()
        if self._client is not None:
            self._client.close()
        if self._redis is not None:
            self._redis.close()

    def __enter__(self) -> Reranker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _make_cache(self, kind: str, entries: int, ttl_s: float, encode, decode) -> Cache:
        if self._redis is None:
            return TTLCache(entries, ttl_s)
        # What a decision depends on besides its key: another model, decoder, mode or prompt decides differently.
        maker = "\x1f".join((self.model, self.decoder, self.mode, INTENT_SYSTEM, LISTWISE_SYSTEM))
        namespace = f"{REDIS_PREFIX}:{kind}:{hashlib.sha1(maker.encode('utf-8')).hexdigest()[:12]}"
        return RedisCache(self._redis, namespace, ttl_s, encode, decode, self.metrics.cache_errors)

    def _key(self, user_id: str, candidates: Sequence[Candidate], context: LiveContext, q: str | None) -> tuple:
        if self.mode == "intent":
            # An intent depends on its prompt alone (not the user, not the candidates): everyone in the same
            # situation with the same request shares one decision.
            return "intent", intent_key(context, q)
        return user_id, context_signature(context), (request_text(q) or "").casefold(), candidate_set_hash(candidates)

    def _owner(self, key: tuple) -> str | None:
        """The user a decision is about: listwise keys begin with them; an intent is everyone's (``_key``)."""
        return key[0] if self.mode == "listwise" else None

    def _submit(self, user_id: str, client: str | None, key: tuple, candidates: list[Candidate],
                context: LiveContext, q: str | None, *, limited: bool = True) -> Future | str:
        """The call in flight for ``key``, started if there is none; else the status refusing it."""
        return self._queue.admit(key, user_id, client,
                                 lambda: self._pool.submit(self._call, key, candidates, context, q), limited=limited)

    def _call(self, key: tuple, candidates: list[Candidate], context: LiveContext, q: str | None) -> _Outcome:
        try:
            return self._ask(key, candidates, context, q)
        except Exception:  # a bug here must still end in the W&D order, not a failed request
            log.exception("re-rank call failed unexpectedly")
            self.metrics.record_call("error", None)
            return _Outcome("error")
        finally:
            self._queue.release(key)

    def _ask(self, key: tuple, candidates: list[Candidate], context: LiveContext, q: str | None) -> _Outcome:
        if self.mode == "intent" and self.decoder == "scored":
            return self._ask_scored(key, context, q)
        if self.mode == "intent":
            messages, fmt, max_tokens = intent_messages(context, q), intent_format(), INTENT_MAX_TOKENS
        else:
            messages = listwise_messages(candidates, context, q)
            fmt = listwise_format([c.item_id for c in candidates])
            max_tokens = LISTWISE_TOKENS_PER_ITEM * min(len(candidates), MAX_RANKED) + 32
        assert self._client is not None  # calls are made only when enabled, which creates the client
        try:
            completion = self._client.complete(messages, fmt, max_tokens)
        except LLMError as e:
            log.warning("re-rank LLM call failed: %s", e)
            self.metrics.record_call(e.kind, None)
            return _Outcome(e.kind)
        try:
            if self.mode == "intent":
                proposal: Applicable = parse_intent(completion.text, request_text(q), completion.refusal)
            else:
                proposal = tuple(parse_ranking(completion.text, candidates, completion.refusal,
                                               context=context, request=request_text(q)))
        except InvalidOutput as e:
            log.warning("re-rank LLM answer unusable (finish_reason %s): %s", completion.finish_reason, e)
            self.metrics.record_call(e.reason, completion)
            return self._settle(key, e.reason)
        self.metrics.record_call("ok", completion)
        self._cache.put(key, proposal, self._owner(key))
        return _Outcome("applied", proposal)

    def _ask_scored(self, key: tuple, context: LiveContext, q: str | None) -> _Outcome:
        calls: list[NextTokens] = []
        client = self._client
        assert client is not None  # calls are made only when enabled, which creates the client

        def asker(messages: list[dict]):
            def ask(answer_prefix: str) -> Sequence[tuple[str, float]]:
                calls.append(client.next_tokens(messages, answer_prefix))
                return calls[-1].top
            return ask

        def prior() -> Priors:
            # The context alone, once per situation: every request made in it is calibrated against it.
            prior_key = intent_key(context)
            hit = self._priors.get(prior_key)
            if hit is None:
                try:
                    hit = (context_masses(asker(intent_messages(context))), 0.0)
                except InvalidOutput as e:  # no calibration for this situation rather than no decisions in it
                    log.warning("re-rank: no length prior for this situation: %s", e)
                    hit = ({}, 0.0)
                self._priors.put(prior_key, hit[0])
            return hit[0]

        try:
            intent, _ = score_intent(asker(intent_messages(context, q)), request_text(q), prior)
        except LLMError as e:
            log.warning("re-rank LLM call failed: %s", e)
            self.metrics.record_call(e.kind, None)
            return _Outcome(e.kind)
        except InvalidOutput as e:
            log.warning("re-rank intent unusable: %s", e)
            self.metrics.record_call(e.reason, _scored_completion(calls))
            return self._settle(key, e.reason)
        self.metrics.record_call("ok", _scored_completion(calls))
        self._cache.put(key, intent)
        return _Outcome("applied", intent)

    def _settle(self, key: tuple, status: str) -> _Outcome:
        if status in SETTLED:
            self._cache.put(key, status, self._owner(key))
        return _Outcome(status)

    def _from_cache(self, hit: tuple[Proposal, float], candidates: list[Candidate], context: LiveContext,
                    start: float) -> RerankResult:
        proposal, age = hit
        if isinstance(proposal, str):
            return self._fallback(candidates, proposal, start)
        return self._applied(proposal, candidates, context, "cached", start, cache_age_s=age)

    def _from_outcome(self, outcome: _Outcome, candidates: list[Candidate], context: LiveContext,
                      start: float) -> RerankResult:
        if outcome.proposal is None:
            return self._fallback(candidates, outcome.status, start)
        return self._applied(outcome.proposal, candidates, context, "applied", start)

    def _applied(self, proposal: Applicable, candidates: list[Candidate], context: LiveContext, status: str,
                 start: float, cache_age_s: float | None = None) -> RerankResult:
        if isinstance(proposal, Intent):
            scored = rescore(proposal, candidates, context)
            scores = {s.candidate.item_id: s.score for s in scored}
            order = complete_order(((s.candidate.item_id, s.reason) for s in scored), candidates)
            items = [RankedItem(c.item_id, i + 1, scores[c.item_id], reason) for i, (c, reason) in enumerate(order)]
            return self._finish(items, status, start, proposal, cache_age_s)
        order = complete_order(proposal, candidates)
        n = len(order)
        items = [RankedItem(c.item_id, i + 1, round(1.0 - i / n, 6), reason) for i, (c, reason) in enumerate(order)]
        return self._finish(items, status, start, cache_age_s=cache_age_s)

    def _fallback(self, candidates: list[Candidate], status: str, start: float) -> RerankResult:
        order = complete_order((), candidates)
        return self._finish([RankedItem(c.item_id, i + 1, c.wd_score, "") for i, (c, _) in enumerate(order)],
                            status, start)

    def _finish(self, items: list[RankedItem], status: str, start: float, intent: Intent | None = None,
                cache_age_s: float | None = None) -> RerankResult:
        self.metrics.results.labels(status).inc()
        return RerankResult(
            items=tuple(items), applied=status in APPLIED, status=status,
            latency_ms=(time.monotonic() - start) * 1000.0, model=self.model, mode=self.mode, intent=intent,
            cache_age_s=cache_age_s,
        )
