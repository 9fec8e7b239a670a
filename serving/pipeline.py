"""The recommend pipeline: live features -> candidates -> Wide & Deep -> MMR -> LLM re-rank -> top k.

Transport-free: the API (``serving.app``) answers with it and the refresh worker
(``serving.worker``) runs it up to the re-rank (``shortlist``), so both ask the
re-ranker about the same candidates in the same context.

- features: the user's stored session row (aged to the request time) and profile from
  Feast, and the live context (``serving.rerank.context.live_context``); the request's
  ``device`` wins over the last event's. A user with neither, and unknown to retrieval,
  is a cold start: the same stages then run on context alone (retrieval's contextual
  popularity, W&D without user features, the re-rank with ``q``).
- candidates: ``CandidateGenerator`` (``serving.candidates``), without the user's recent items.
- scoring: one Predict call over the whole batch. If the model server cannot answer, the
  request degrades to retrieval order with the fallback ``model_unavailable`` (or
  ``model_error``) rather than failing: a list without W&D beats no list.
- diversity: MMR over the items' genre vectors (``serving.mmr_lambda``) down to ``serving.top_n``.
- rerank: ``Reranker.rerank`` within its budget; whatever it answers is a permutation of the
  shortlist, so every item served is a candidate.
- experiment: the user's variant (``serving.experiments.assignment``) may change the MMR λ, turn the re-rank
  off, or explore the final slate (``serving.experiments.exploration``: each shown item's propensity is in
  the answer, for the exposure the API logs).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import grpc
import numpy as np

from features.user_state import decay_features_to
from models.examples import RANK_SIGNATURE, RequestContext, request_inputs, serving_inputs
from models.retrieval import CandidateGenerator
from serving.diversity import mmr
from serving.experiments.assignment import assign
from serving.experiments.exploration import Slot, epsilon_greedy, greedy, request_rng
from serving.rerank import Candidate as RerankCandidate
from serving.rerank import LiveContext, RankedItem, Reranker, RerankResult, live_context
from serving.tf_client import PredictClient, PredictError
from streamrec.config import Settings

log = logging.getLogger(__name__)

# The keys of a response's timings_ms: the stages in order, then the whole request.
STAGES = ("features", "candidates", "scoring", "diversity", "rerank", "total")
# The model server is down or has no version: degrade. Any other code is a request the model rejects.
_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.NOT_FOUND}
SOURCE_REASONS = {
    "embedding": "Picked for you from your viewing history",
    "content": "Matches the genres you are watching now",
    "popular": "Popular with viewers right now",
}


class FeatureStoreUnavailable(RuntimeError):
    """The online store could not be read; the API answers 503 with this message."""


# ---------------------------------------------------------------- the response


@dataclass
class ItemScores:
    retrieval: float  # the retrieval source's own score (comparable within a source only)
    wide_deep: float | None  # None when the model server could not answer
    final: float  # what the served order rests on: the re-rank's score when applied, else W&D (in MMR order)


@dataclass
class RecommendedItem:
    item_id: str
    title: str
    genres: list[str]
    source: str  # retrieval source: embedding | content | popular
    scores: ItemScores
    reason: str
    propensity: float = 1.0  # the probability the serving policy had of showing this item in this place
    explored: bool = False  # shown by exploration instead of the ranked item of this place


@dataclass
class ModelInfo:
    name: str
    version: int


@dataclass
class RerankInfo:
    applied: bool
    status: str  # serving.rerank.reranker.STATUSES: applied | cached | a fallback (timeout, busy, ...)
    mode: str
    model: str
    latency_ms: float
    cache_age_s: float | None = None  # for status cached: how old the cached answer is, when the re-ranker says


@dataclass
class ExperimentInfo:
    name: str  # experiments.name; empty when none runs
    variant: str  # the user's variant ("default" when none runs)


@dataclass
class FeatureSnapshot:
    found: bool  # the user has a stored session row
    age_s: float | None  # request time - the user's last event
    last_event_ts_ms: int | None
    session: dict[str, Any] | None  # the session row aged to the request time
    profile: dict[str, Any] | None
    context: dict[str, Any]  # the live context the re-ranker saw


@dataclass
class Recommendation:
    user_id: str
    k: int
    cold_start: bool
    items: list[RecommendedItem]
    features: FeatureSnapshot
    model: ModelInfo | None  # None when the list was not scored by the model
    timings_ms: dict[str, float]  # STAGES
    rerank: RerankInfo
    fallbacks: list[str]  # cold_start, features_unavailable, model_unavailable, model_error, rerank_<status>
    request_id: str  # the exposure's id: the answer's, in kafka.exposures_topic
    experiment: ExperimentInfo
    before_rerank: list[RecommendedItem] | None = None  # asked for: the top k in Wide & Deep + MMR order


# ---------------------------------------------------------------- the stages


@dataclass(frozen=True)
class Shortlisted:
    """A candidate that survived MMR, with its scores so far."""

    item_id: str
    title: str
    genres: tuple[str, ...]
    year: int | None
    duration_minutes: float | None
    source: str
    retrieval_score: float
    wd_score: float | None
    relevance: float  # what MMR and the re-rank's fallback order used: W&D, else a retrieval-rank score


@dataclass
class Shortlist:
    """Everything up to the re-rank: what the API finishes and the worker hands to ``Reranker.refresh``."""

    user_id: str
    now_ms: int
    cold_start: bool
    session: dict | None  # aged to now_ms
    profile: dict | None
    context: LiveContext
    items: list[Shortlisted]
    model: ModelInfo | None
    fallbacks: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def rerank_candidates(self) -> list[RerankCandidate]:
        return [
            RerankCandidate(s.item_id, s.title, s.genres, s.year, s.duration_minutes, s.relevance, s.retrieval_score)
            for s in self.items
        ]


class ItemCatalog:
    """Item rows held in memory: Feast's online read costs ~0.1 ms per item, too much for 200 per request.

    Read at start-up for the items retrieval was trained on; items added or changed since come from the catalog
    topic (``with_items``, ``serving.catalog_updates``). Items retrieval knows but the item store does not are
    ``missing`` and never served: there is nothing to show or score them with. ``changed``: the items whose
    record is not the one the model was exported with (scored from their content: ``Scorer``).
    """

    def __init__(self, rows: Sequence[dict]):
        self.rows = {r["item_id"]: r for r in rows if r.get("title") is not None}
        self.missing = tuple(r["item_id"] for r in rows if r.get("title") is None)
        self.changed: frozenset[str] = frozenset()
        self.added: frozenset[str] = frozenset()  # of ``changed``, the items new since the start (not trained on)

    @classmethod
    def load(cls, store, item_ids: Sequence[str]) -> ItemCatalog:
        return cls(store.item_features(item_ids))

    def with_items(self, items: Mapping[str, dict]) -> ItemCatalog:
        """A new catalog: this one with ``items`` (item_id -> record) added or replaced."""
        out = copy.copy(self)
        out.rows = {**self.rows, **items}
        out.missing = tuple(i for i in self.missing if i not in items)
        out.changed = self.changed | frozenset(items)
        out.added = self.added | frozenset(i for i in items if i not in self.rows and i not in self.missing)
        return out

    def __len__(self) -> int:
        return len(self.rows)


class Served(NamedTuple):
    """What a request serves from, swapped as one when items change: a request takes both from one snapshot."""

    catalog: ItemCatalog
    generator: CandidateGenerator


class Scorer:
    """Wide & Deep scores from the model server: one Predict call per candidate batch.

    The signatures are read from the server (lazily, and again after a failure), so the client follows
    what is served: the live model or the no-live ablation, its output name, and whether it has the
    ``rank`` signature (the request's inputs once plus candidate ids: nothing built per candidate),
    else ``serving_default`` with one row per candidate (versions exported before ``rank`` existed).
    """

    def __init__(self, client: PredictClient):
        self.client = client
        self._signature: tuple[bool, str, bool] | None = None  # (takes live inputs, output name, has rank)

    def score(self, session: dict | None, items: Sequence[dict], profile: dict | None,
              request: RequestContext, changed: frozenset[str] = frozenset()) -> tuple[np.ndarray, ModelInfo]:
        """``changed``: ids whose record the model's own item table does not hold (added or changed since the
        export): they go through ``serving_default`` with their content (genres, year, length), in a second
        call when the rest use ``rank``."""
        if self._signature is None:
            self._signature = self._read_signature()
        live, _, rank = self._signature
        # Without ``rank`` every item goes by its content.
        by_content = [not rank or item["item_id"] in changed for item in items]
        known = [n for n, content in enumerate(by_content) if not content]
        fresh = [n for n, content in enumerate(by_content) if content]
        scores = np.empty(len(items), np.float64)
        info = None
        if known:
            inputs = request_inputs(session, profile, request, live=live)
            inputs["item_id"] = np.array([items[n]["item_id"] for n in known], dtype=object)
            scores[known], info = self._predict(inputs, RANK_SIGNATURE, len(known))
        if fresh:
            inputs = serving_inputs(session, [items[n] for n in fresh], profile, request, live=live)
            scores[fresh], info = self._predict(inputs, "serving_default", len(fresh))
        assert info is not None  # items is not empty: one of the calls ran
        return scores, info

    def _predict(self, inputs: dict, signature: str, n: int) -> tuple[np.ndarray, ModelInfo]:
        assert self._signature is not None
        output = self._signature[1]
        try:
            outputs, name, version = self.client.predict_versioned(inputs, signature)
        except PredictError:
            self._signature = None  # the served version may have changed: read its signatures again
            raise
        if output not in outputs:
            self._signature = None
            raise PredictError(grpc.StatusCode.INVALID_ARGUMENT, f"the model answered {sorted(outputs)}, not {output!r}")
        return np.asarray(outputs[output], dtype=np.float64).reshape(n), ModelInfo(name, version)

    def _read_signature(self) -> tuple[bool, str, bool]:
        signatures = self.client.metadata().signatures
        signature = signatures.get("serving_default")
        if signature is None or len(signature.outputs) != 1:
            raise PredictError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"model {self.client.model_name!r} has no serving_default signature with one output")
        (output,) = signature.outputs
        # The no-live ablation has no live inputs at all.
        return "device" in signature.inputs, output, RANK_SIGNATURE in signatures


class Pipeline:
    def __init__(self, settings: Settings, store, generator: CandidateGenerator, scorer: Scorer,
                 reranker: Reranker | None, catalog: ItemCatalog, clock: Callable[[], float] = time.time):
        """``reranker`` None: a pipeline for ``shortlist`` only (``recommend`` needs one)."""
        self.settings = settings
        self.store = store
        self.served = Served(catalog, generator)
        self.scorer = scorer
        self.reranker = reranker
        self.clock = clock
        self._known_users = set(generator.user_ids)
        self._adding = threading.Lock()
        # Feast's SQLite store shares one connection between threads (reads are ~1 ms, so a lock costs little);
        # Redis clients take a connection from a pool per call.
        sqlite = settings.feast.online_store == "sqlite"
        self._store_lock = threading.Lock() if sqlite else contextlib.nullcontext()

    @property
    def catalog(self) -> ItemCatalog:
        return self.served.catalog

    @property
    def generator(self) -> CandidateGenerator:
        return self.served.generator

    def add_items(self, items: Mapping[str, dict], texts: Mapping[str, np.ndarray] | None = None) -> None:
        """Serve ``items`` (item_id -> record, added or changed) from the next request on."""
        with self._adding:  # two writers would each drop the other's items
            served = self.served
            self.served = Served(served.catalog.with_items(items), served.generator.with_items(items, texts))

    # ---- the whole request

    def recommend(self, user_id: str, k: int, device: str | None = None, q: str | None = None,
                  client: str | None = None, at_ms: int | None = None, compare: bool = False) -> Recommendation:
        """``client``: who asks (the re-ranker's fair queue and rate limit go by it); ``at_ms``: answer as at
        that time (default now); ``compare``: also return the list before the re-rank."""
        started = time.perf_counter()
        experiment = self.settings.experiments
        variant_name, variant = assign(experiment, user_id)
        short = self.shortlist(user_id, device, at_ms, variant.mmr_lambda)
        t = time.perf_counter()
        assert self.reranker is not None, "a shortlist-only pipeline (no reranker) cannot recommend"
        if variant.rerank is False:
            result = self.reranker.unranked(short.rerank_candidates())
        else:
            result = self.reranker.rerank(user_id, short.rerank_candidates(), short.context, q, client=client)
        timings = {**short.timings_ms, "rerank": _ms(t)}
        timings["total"] = _ms(started)
        fallbacks = list(short.fallbacks)
        if not result.applied and result.status != "disabled":
            fallbacks.append(f"rerank_{result.status}")
        by_id = {s.item_id: s for s in short.items}
        ranked = {r.item_id: r for r in result.items}
        request_id = uuid.uuid4().hex
        order = [r.item_id for r in result.items]
        slate = (epsilon_greedy(order, k, variant.epsilon, request_rng(request_id))
                 if variant.exploration == "epsilon_greedy" else greedy(order, k))
        items = [_item(by_id[s.item_id], ranked[s.item_id], s) for s in slate]
        return Recommendation(
            user_id=user_id, k=k, cold_start=short.cold_start, items=items, features=_snapshot(short),
            model=short.model, timings_ms={stage: round(timings[stage], 3) for stage in STAGES},
            rerank=_rerank_info(result), fallbacks=fallbacks, request_id=request_id,
            experiment=ExperimentInfo(experiment.name, variant_name),
            before_rerank=[_item(s, RankedItem(s.item_id, n, s.relevance, ""))
                           for n, s in enumerate(short.items[:k], 1)] if compare else None,
        )

    # ---- up to the re-rank

    def shortlist(self, user_id: str, device: str | None = None, at_ms: int | None = None,
                  mmr_lambda: float | None = None) -> Shortlist:
        """``mmr_lambda``: the variant's, instead of ``serving.mmr_lambda``."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        now_ms = int(self.clock() * 1000) if at_ms is None else int(at_ms)
        try:
            stored, profile = self.read_features(user_id)
            cold = stored is None and profile is None and user_id not in self._known_users
            fallbacks = ["cold_start"] if cold else []
        except FeatureStoreUnavailable:  # a list without the user's features beats no list (Redis restarting, say)
            stored, profile, cold, fallbacks = None, None, False, ["features_unavailable"]
        session = decay_features_to(stored, now_ms, self.settings.features) if stored else None
        catalog, generator = self.served
        context = live_context(session, catalog.rows, now_ms, self.settings.features, device)
        timings["features"] = _ms(t)

        t = time.perf_counter()
        retrieval_context = {"daypart": context.daypart, "device": context.device, "is_weekend": context.is_weekend}
        recent = list((session or {}).get("last_items") or ())  # watched just now: not worth recommending again
        candidates = generator.candidates(user_id, session, retrieval_context, self.settings.serving.candidates,
                                          exclude=recent + list(catalog.missing))
        rows = [catalog.rows[c.item_id] for c in candidates]
        timings["candidates"] = _ms(t)

        t = time.perf_counter()
        wd, model = None, None
        if candidates:
            request = RequestContext(user_id, now_ms, context.device or "", self.settings.features.timezone)
            try:
                wd, model = self.scorer.score(stored, rows, profile, request, catalog.changed)
            except PredictError as e:
                reason = "model_unavailable" if e.code in _UNAVAILABLE else "model_error"
                log.warning("scoring fell back to retrieval order (%s): %s", reason, e)
                fallbacks.append(reason)
        # Without W&D, the generator's own order (its sources' scores are not comparable) is the relevance.
        relevance = wd if wd is not None else 1.0 - np.arange(len(candidates)) / max(len(candidates), 1)
        timings["scoring"] = _ms(t)

        t = time.perf_counter()
        codes = generator.catalog.encode([c.item_id for c in candidates])
        lam = self.settings.serving.mmr_lambda if mmr_lambda is None else mmr_lambda
        picked = with_new_items(mmr(relevance, generator.genres[codes], lam,
                                    self.settings.serving.top_n),
                                [n for n, c in enumerate(candidates) if c.source == "content" and c.item_id in catalog.added],
                                self.settings.serving.new_item_slots)
        items = [_shortlisted(candidates[i], rows[i], None if wd is None else float(wd[i]), float(relevance[i]))
                 for i in picked]
        timings["diversity"] = _ms(t)
        return Shortlist(user_id, now_ms, cold, session, profile, context, items, model, fallbacks, timings)

    def read_features(self, user_id: str) -> tuple[dict | None, dict | None]:
        """The stored session row and the profile, each None when the user has none."""
        try:
            with self._store_lock:
                stored, profile = self.store.user_features(user_id)
        except Exception as e:  # any failure of the store is the store's, not this request's
            log.warning("online feature read failed: %s: %s", type(e).__name__, e)
            raise FeatureStoreUnavailable(f"feature store unavailable: {type(e).__name__}: {e}") from e
        stored = stored if stored.get("last_event_ts_ms") is not None else None
        profile = profile if profile.get("profile_events") is not None else None
        return stored, profile


def with_new_items(picked: list[int], new: list[int], slots: int) -> list[int]:
    """The shortlist ``picked`` (candidate positions, best first) with up to ``slots`` of its places held by the
    ``new`` items (positions, in retrieval order): those missing take the last places, the rest keep their order."""
    wanted = [n for n in new if n not in picked][:max(slots - len(set(new) & set(picked)), 0)]
    if not wanted or not picked:
        return picked
    keep = len(picked) - min(len(wanted), len(picked))
    return picked[:keep] + wanted[:len(picked) - keep]


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def _shortlisted(candidate, row: dict, wd: float | None, relevance: float) -> Shortlisted:
    year, minutes = row.get("year"), row.get("duration_minutes")
    return Shortlisted(
        item_id=candidate.item_id, title=str(row["title"]), genres=tuple(row.get("genres") or ()),
        year=None if year is None else int(year), duration_minutes=None if minutes is None else float(minutes),
        source=candidate.source, retrieval_score=float(candidate.score), wd_score=wd, relevance=relevance,
    )


def _item(s: Shortlisted, ranked: RankedItem, slot: Slot | None = None) -> RecommendedItem:
    return RecommendedItem(
        item_id=s.item_id, title=s.title, genres=list(s.genres), source=s.source,
        scores=ItemScores(retrieval=round(s.retrieval_score, 6),
                          wide_deep=None if s.wd_score is None else round(s.wd_score, 6),
                          final=round(float(ranked.score), 6)),
        reason=ranked.reason or SOURCE_REASONS.get(s.source, ""),
        propensity=1.0 if slot is None else slot.propensity, explored=slot is not None and slot.explored,
    )


def _rerank_info(result: RerankResult) -> RerankInfo:
    return RerankInfo(applied=result.applied, status=result.status, mode=result.mode, model=result.model,
                      latency_ms=round(result.latency_ms, 3),
                      # RerankResult does not carry the cache entry's age yet (asked of serving.rerank).
                      cache_age_s=result.cache_age_s)


def _snapshot(short: Shortlist) -> FeatureSnapshot:
    session = short.session
    return FeatureSnapshot(
        found=session is not None,
        age_s=None if session is None else session["time_since_last_event_s"],
        last_event_ts_ms=None if session is None else int(session["last_event_ts_ms"]),
        session=None if session is None else {k: v for k, v in session.items() if k != "user_id"},
        profile=None if short.profile is None else {k: v for k, v in short.profile.items() if k != "user_id"},
        context=dataclasses.asdict(short.context),
    )
