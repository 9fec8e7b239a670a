"""``streamrec evaluate --rerank``: Wide & Deep alone versus Wide & Deep + LLM re-rank on context-shifted sessions.

Per world seed: generate a small world in a scratch directory; put it into a feature store of its own and build
the examples exactly as ``models.evaluate`` does (``prepare``), then train W&D (live features on) on the positives
picked before the cutoff (the last ``holdout_days`` of the world). Each held-out, context-shifted session
(``sessions``) is scored at its start, the way the recommend API would have: features strictly before the
session's first event (Feast, point in time), the session's own time and device, every item the user had not
touched yet ranked by the trained W&D (``models.wide_deep.WideDeep.score``); the W&D top ``serving.top_n``
are the candidates. The re-ranker then orders them for each mode, through ``Reranker.refresh`` (the LLM call
the refresh worker makes, no latency budget).

Intent mode asks the LLM about the situation only, so many sessions share one prompt: the first session of a
prompt makes the call and the others re-apply its intent (``intent.rescore``), as the API's cache would. Listwise
mode reads the candidates, so every session is a call.

Deliberate differences from the API: no retrieval stage and no MMR (the candidates are W&D's best of all unseen
items, so the lift measured is the re-rank's alone), and W&D's negatives come from ``prepare``, which draws them
among items the user had not touched by then, as ``models.evaluate`` does.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.user_state import decay_features_to
from models.evaluate import scratch_settings
from models.examples import context_inputs, item_inputs
from models.paired_bootstrap import by_group, paired_lift
from models.train import EventLog, fit, prepare
from models.wide_deep import WideDeepConfig
from serving.rerank.context import Candidate, LiveContext, live_context
from serving.rerank.endpoint import resolve_endpoint
from serving.rerank.intent import Intent, rescore
from serving.rerank.prompt import intent_key
from serving.rerank.reranker import APPLIED, MODES, Reranker, RerankResult
from serving.rerank_eval.lift import K, latency_summary, session_metrics
from serving.rerank_eval.report import FULL_WEIGHT, ORACLE, write_report
from serving.rerank_eval.sessions import held_out_sessions, read_sessions
from streamrec.config import LLMMode, Settings
from streamrec.errors import UserError
from streams.generator import DAY_MS, generate_world

METRICS = (f"ndcg@{K}", f"hr@{K}")


@dataclass(frozen=True)
class RerankOptions:
    seeds: tuple[int, ...] = (0, 1, 2)
    modes: tuple[LLMMode, ...] = ("intent",)  # check() rejects any other name
    max_sessions: int | None = 300  # per seed and mode; listwise costs seconds a session
    users: int = 300
    items: int = 400
    # Monday to Monday: the held-out Sunday and Monday after a week that had a Saturday in training.
    days: float = 8.0
    holdout_days: float = 2.0
    negatives: int = 4
    config: WideDeepConfig = field(default_factory=WideDeepConfig)
    progress: bool = True

    def check(self) -> None:
        if not self.seeds:
            raise UserError("--seeds needs at least one world seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--seeds repeats a seed: {list(self.seeds)}")
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise UserError(f"--rerank-modes: unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise UserError(f"--rerank-sessions must be at least 1, got {self.max_sessions}")
        if self.users < 2 or self.items < 30:
            raise UserError(f"a re-rank world needs at least 2 users and 30 items, got {self.users} and {self.items}")
        if not 0 < self.holdout_days < self.days:
            raise UserError(f"--holdout-days must be above 0 and below --world-days ({self.days}), got {self.holdout_days}")


def run_rerank_evaluation(settings: Settings, out_dir: Path, options: RerankOptions) -> dict:
    """Every seed's sessions, decisions and metrics, the mean over seeds; writes ``rerank.md``/``rerank.json``.
    The LLM endpoint of ``settings`` must answer (the CLI starts an embedded one: ``infra.llm.embedded_server``)."""
    options.check()
    if not settings.llm.enabled:
        raise UserError("the LLM re-rank is disabled (llm.enabled: false): there is nothing to measure")
    # The world's clock is UTC (its day-parts, weekends and context rules): features and prompts must read it so.
    settings = dataclasses.replace(settings, features=dataclasses.replace(settings.features, timezone="UTC"))
    rows, seeds = [], {}
    endpoint, _, model = resolve_endpoint(settings)
    started = time.monotonic()
    _say(options, f"rerank: LLM {model} at {endpoint}; seeds {list(options.seeds)}, modes {list(options.modes)}")
    for seed in options.seeds:
        found, seeds[seed] = evaluate_seed(settings, seed, options, started)
        rows += found
    sessions = pd.DataFrame(rows)
    summary = {
        # The LLM settings as used (mode per run, decoder, timeout), never the key.
        "llm": {"model": model, "endpoint": endpoint,
                "settings": {k: v for k, v in dataclasses.asdict(settings.llm).items() if k not in ("api_key", "mode")}},
        "world": {"users": options.users, "items": options.items, "days": options.days,
                  "holdout_days": options.holdout_days},
        "seeds": list(options.seeds), "k": K, "top_n": settings.serving.top_n, "max_sessions": options.max_sessions,
        "wide_deep_config": options.config.to_dict(), "negatives_per_positive": options.negatives,
        "per_seed": seeds,
        "modes": {mode: summarize(sessions[sessions["mode"] == mode]) for mode in (*options.modes, FULL_WEIGHT, ORACLE)
                  if (sessions["mode"] == mode).any()},
        "seconds": round(time.monotonic() - started, 1),
        "sessions": json.loads(sessions.to_json(orient="records")),
    }
    write_report(Path(out_dir), summary)
    return summary


def evaluate_seed(settings: Settings, seed: int, options: RerankOptions, started: float) -> tuple[list[dict], dict]:
    """One world: a row per session and mode with both orders and their metrics, and what it took."""
    name = f"rerank-seed{seed}"
    scratch = scratch_settings(settings, name)
    # Ours alone (the name says so): a rerun must not find the previous run's store and world.
    shutil.rmtree(scratch.data_path, ignore_errors=True)
    world_dir = scratch.data_path / "world"
    generated = generate_world(world_dir, users=options.users, items=options.items, days=options.days, seed=seed)
    cutoff = generated["end_ms"] - round(options.holdout_days * DAY_MS)
    _say(options, f"seed {seed}: world of {generated['events']} events, {generated['sessions']} sessions", started)

    prepared = prepare(scratch, EventLog(world_dir / "events.jsonl", world_dir / "items.jsonl", name),
                       negatives=options.negatives, seed=seed)
    requests = prepared.examples.requests
    train_groups = requests.loc[requests["event_timestamp"] < pd.Timestamp(cutoff, unit="ms", tz="UTC"), "group"]
    _say(options, f"seed {seed}: training W&D on {len(train_groups)} positives before the cutoff", started)
    model, train_metrics = fit(prepared.examples.of_groups(train_groups), prepared.catalog["item_id"], live=True,
                                 config=options.config, seed=seed, timezone="UTC", progress=False)

    world = json.loads((world_dir / "world.json").read_text(encoding="utf-8"))
    events = prepared.interactions[["user_id", "item_id", "ts_ms", "event_type"]]
    chosen, counts = held_out_sessions(read_sessions(world_dir / "sessions.jsonl"), events, cutoff,
                                       world["context_rules"])
    if chosen.empty:
        raise UserError(f"seed {seed}: no context-shifted held-out session with a new watch ({counts}): "
                        "make the world larger or hold out more days")
    if options.max_sessions is not None and len(chosen) > options.max_sessions:
        # A seeded sample, not the first N: those would all come from the hours right after the cutoff.
        keep = np.sort(np.random.default_rng(seed).choice(len(chosen), options.max_sessions, replace=False))
        chosen = chosen.iloc[keep].reset_index(drop=True)
    _say(options, f"seed {seed}: {len(chosen)} sessions kept of {counts['held_out']} held out {counts}", started)

    shortlists = shortlist(scratch, model, prepared.catalog, events, chosen, settings.serving.top_n)
    rows = [row for mode in options.modes for row in decisions(settings, mode, chosen, shortlists, seed, options, started)]
    rows += oracle(chosen, shortlists, seed)
    info = {"counts": counts | {"evaluated": len(chosen)}, "cutoff_ms": cutoff,
            "train_positives": len(train_groups), "train_metrics": train_metrics,
            "world_events": generated["events"], "world_sessions": generated["sessions"]}
    return rows, info


@dataclass(frozen=True)
class Shortlist:
    """What W&D hands the re-ranker for one session, and the context it is asked in."""

    candidates: tuple[Candidate, ...]
    context: LiveContext


def shortlist(scratch: Settings, model, catalog: pd.DataFrame, events: pd.DataFrame, chosen: pd.DataFrame,
              top_n: int) -> list[Shortlist]:
    """Per session, W&D's top ``top_n`` of the items the user had not touched before it, and its live context."""
    from features.store import FeatureStoreClient

    starts = pd.to_datetime(chosen["start_ts"], unit="ms", utc=True)
    entity = pd.DataFrame({"user_id": chosen["user_id"], "event_timestamp": starts, "device": chosen["device"]})
    features = FeatureStoreClient(scratch).training_set(entity, views=("session", "profile"))
    first_touch = events.groupby(["user_id", "item_id"])["ts_ms"].min()
    records = {r["item_id"]: r for r in catalog.to_dict("records")}
    rows = [_plain(r) for r in features.to_dict("records")]
    scores = _wd_scores(model, features, catalog, first_touch, chosen, scratch.features.timezone)
    out = []
    for row, session, (item_ids, wd) in zip(rows, chosen.itertuples(index=False), scores):
        best = np.argsort(-wd, kind="stable")[:top_n]
        # No retrieval stage here, so its score is W&D's own (the prompts do not show it).
        cands = tuple(_candidate(records[item_ids[i]], float(wd[i])) for i in best)
        stored = row if row.get("last_event_ts_ms") is not None else None
        session_row = decay_features_to(stored, session.start_ts, scratch.features) if stored else None
        out.append(Shortlist(cands, live_context(session_row, records, int(session.start_ts), scratch.features,
                                                 session.device)))
    return out


def _wd_scores(model, features: pd.DataFrame, catalog: pd.DataFrame, first_touch: pd.Series,
               chosen: pd.DataFrame, timezone: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(unseen item ids, their W&D scores) per session: each session's context and each item encoded once."""
    unseen = []
    for session in chosen.itertuples(index=False):
        touched = first_touch.get(session.user_id)
        seen = set() if touched is None else set(touched.index[touched.to_numpy() < session.start_ts])
        unseen.append(np.flatnonzero(~catalog["item_id"].isin(seen).to_numpy()))
    contexts, items = model.encode(context_inputs(features, timezone, live=True)), model.encode(item_inputs(catalog))
    flat = model.score(contexts, items, np.repeat(np.arange(len(unseen)), [len(u) for u in unseen]),
                       np.concatenate(unseen))
    bounds = np.cumsum([0, *map(len, unseen)])
    ids = catalog["item_id"].to_numpy()
    return [(ids[rows], flat[lo:hi]) for rows, lo, hi in zip(unseen, bounds, bounds[1:])]


def decisions(settings: Settings, mode: LLMMode, chosen: pd.DataFrame, shortlists: list[Shortlist], seed: int,
              options: RerankOptions, started: float) -> list[dict]:
    """Each session's W&D order and re-ranked order under ``mode``, with the call's status and latency."""
    # Its own cache: a shared (Redis) one could answer from decisions an earlier run made.
    cfg = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, mode=mode),
                              serving=dataclasses.replace(settings.serving, rerank_cache="memory"))
    shared: dict[str, RerankResult] = {}  # intent prompt -> the RerankResult of its one call
    out = []
    with Reranker(cfg) as reranker:
        for n, (session, short) in enumerate(zip(chosen.itertuples(index=False), shortlists), 1):
            prompt = intent_key(short.context) if mode == "intent" else None
            first = shared.get(prompt) if prompt is not None else None
            if first is None:
                result = reranker.refresh(session.user_id, short.candidates, short.context)
                order, status, intent, latency = [i.item_id for i in result.items], result.status, result.intent, result.latency_ms
                if prompt is not None:
                    shared[prompt] = result
            else:
                # Same prompt, same decision: re-apply it to this session's candidates (a W&D order when it failed).
                status, intent, latency = first.status, first.intent, None
                order = ([s.candidate.item_id for s in rescore(intent, short.candidates, short.context)]
                         if intent is not None else [c.item_id for c in short.candidates])
            out.append(_row(session, short, seed, mode, order, status, latency, intent))
            if mode == "intent":
                full = None if intent is None else dataclasses.replace(intent, asked=True)
                full_order = ([s.candidate.item_id for s in rescore(full, short.candidates, short.context)]
                              if full is not None else [c.item_id for c in short.candidates])
                out.append(_row(session, short, seed, FULL_WEIGHT, full_order, status, None, full, called=False))
            if n % 25 == 0 or n == len(chosen):
                calls = sum(r["called"] for r in out)
                _say(options, f"seed {seed}: {mode} {n}/{len(chosen)} sessions, {calls} LLM calls", started)
    return out


def oracle(chosen: pd.DataFrame, shortlists: list[Shortlist], seed: int) -> list[dict]:
    """The world's own intent genre for each session through the same re-scoring: a bound, not a mode (no LLM)."""
    rows = []
    for session, short in zip(chosen.itertuples(index=False), shortlists):
        intent = Intent(genre=session.intent, asked=True)
        order = [s.candidate.item_id for s in rescore(intent, short.candidates, short.context)]
        rows.append(_row(session, short, seed, ORACLE, order, "applied", None, intent, called=False))
    return rows


def _row(session, short: Shortlist, seed: int, mode: str, order: list[str], status: str, latency: float | None,
         intent: Intent | None, called: bool | None = None) -> dict:
    wd = [c.item_id for c in short.candidates]
    metrics = session_metrics([wd, order], [session.relevant] * 2)
    weights = intent.genre_weights() if intent is not None else {}
    return {
        "seed": seed, "mode": mode, "session_id": session.session_id, "user_id": session.user_id,
        "context_type": session.context_type, "context": f"{session.daypart}/{'weekend' if session.weekend else 'weekday'}/{session.device}",
        "usual": session.usual, "world_intent": session.intent, "relevant": list(session.relevant),
        "wd_order": wd, "reranked_order": order, "status": status, "applied": status in APPLIED,
        "called": latency is not None if called is None else called, "latency_ms": latency,
        "llm_intent": None if intent is None else {k: v for k, v in dataclasses.asdict(intent).items() if k != "reason"},
        # Does the decision favour the genre the world actually drew for this session?
        "intent_favours_world_genre": bool(weights.get(session.intent, 0) > 0) if intent is not None else None,
        **{f"wd_{m}": float(v[0]) for m, v in metrics.items()},
        **{f"rerank_{m}": float(v[1]) for m, v in metrics.items()},
    }


def summarize(rows: pd.DataFrame) -> dict:
    """One mode's figures: the mean over seeds with CIs, per seed, per context type; statuses; latencies."""
    strata = rows["seed"].to_numpy()
    overall = {m: paired_lift(rows[f"wd_{m}"], rows[f"rerank_{m}"], strata) for m in METRICS}
    per_seed = {int(s): {m: paired_lift(g[f"wd_{m}"], g[f"rerank_{m}"]) for m in METRICS}
                for s, g in rows.groupby("seed")}
    ndcg, hr = METRICS
    types = by_group(rows[f"wd_{ndcg}"], rows[f"rerank_{ndcg}"], rows["context_type"], strata)
    for name, block in types.items():
        mine = rows[rows["context_type"] == name]
        block[f"{hr}_wd"], block[f"{hr}_rerank"] = float(mine[f"wd_{hr}"].mean()), float(mine[f"rerank_{hr}"].mean())
        fits = mine["intent_favours_world_genre"].dropna()
        block["intent_favours_world_genre"] = float(fits.astype(float).mean()) if len(fits) else None
    calls = rows[rows["called"]]
    return {
        "overall": overall, "per_seed": per_seed, "by_context_type": types,
        "sessions": len(rows), "statuses": rows["status"].value_counts().to_dict(),
        "fell_back": int((~rows["applied"]).sum()),
        "calls": {"count": len(calls), "statuses": calls["status"].value_counts().to_dict()},
        "latency": latency_summary(calls["latency_ms"].dropna().tolist()),
        "intents": _intent_counts(rows),
    }


def _intent_counts(rows: pd.DataFrame) -> dict:
    """How often each decided intent (mood, genre, length) was applied, by context: what the LLM made of it."""
    decided = rows[rows["llm_intent"].notna() & rows["called"]]
    counts: dict[str, dict[str, int]] = {}
    for context, intent in zip(decided["context"], decided["llm_intent"]):
        label = f"{intent['mood']}/{intent['genre'] or '-'}/{intent['preferred_length']}"
        counts.setdefault(context, {}).setdefault(label, 0)
        counts[context][label] += 1
    return counts


def _candidate(record: dict, wd: float) -> Candidate:
    year, minutes = record.get("year"), record.get("duration_minutes")
    return Candidate(record["item_id"], record["title"], tuple(record["genres"]),
                     None if year is None or pd.isna(year) else int(year),
                     None if minutes is None or pd.isna(minutes) else float(minutes), wd, wd)


def _plain(row: dict) -> dict:
    """A feature row as the online store answers it: missing markers (NA, NaN, NaT) as None, arrays as lists."""
    return {k: (v.tolist() if isinstance(v, np.ndarray) else None if not isinstance(v, (list, tuple)) and pd.isna(v)
                else v) for k, v in row.items()}


def _say(options: RerankOptions, text: str, started: float | None = None) -> None:
    if options.progress:
        elapsed = "" if started is None else f" [{time.monotonic() - started:.0f}s]"
        print(f"{text}{elapsed}", flush=True)
