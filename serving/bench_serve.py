"""``streamrec bench serve``: open-loop load on the running recommend API.

Requests leave on a fixed schedule (``--rps``) whatever the answers do, so a slow server
meets the same load a real one would; each latency is taken from the scheduled send time,
so the client's own queueing counts too. Bounded: ``--rps`` x ``--seconds`` requests at
most, at most MAX_IN_FLIGHT at once (beyond: counted as dropped), loopback URLs only.

Printed: end-to-end and per-stage (the response's ``timings_ms``) p50/p95/p99, errors, the
re-rank statuses with the LLM fallback rate, and the age of the cached re-ranks served.
Modes, matching how the API was started:
- ``off``: the API runs with ``llm.enabled: false``;
- ``warm``: LLM on, and every user's re-rank is cached before the load (no LLM call on the hot path);
- ``llm``: LLM on, cold cache: requests wait up to ``llm.budget_ms`` for the LLM, then fall back.
Goal (modes off and warm): p99 <= 20 ms at 100 rps; exit code 1 when missed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from streamrec.auth import bearer_header
from streamrec.config import Settings
from streamrec.errors import UserError

GOAL_P99_MS = 20.0
MODES = ("off", "warm", "llm")
MAX_RPS = 2000
MAX_SECONDS = 600
MAX_IN_FLIGHT = 256
REQUEST_TIMEOUT_S = 10.0
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Re-rank statuses that mean "the LLM was asked for nothing": not fallbacks.
NOT_ASKED = {"disabled"}
APPLIED = {"applied", "cached"}


@dataclass
class Results:
    e2e_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)  # in the pipeline's order, as answered
    errors: Counter = field(default_factory=Counter)
    rerank: Counter = field(default_factory=Counter)
    cache_age_s: list[float] = field(default_factory=list)
    dropped: int = 0
    sent: int = 0

    def record(self, e2e_ms: float, body: dict) -> None:
        self.e2e_ms.append(e2e_ms)
        for stage, ms in body["timings_ms"].items():
            self.stages_ms.setdefault(stage, []).append(ms)
        self.rerank[body["rerank"]["status"]] += 1
        if body["rerank"].get("cache_age_s") is not None:
            self.cache_age_s.append(body["rerank"]["cache_age_s"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the API's base URL, loopback only (default: http://127.0.0.1:<serving.port>)")
    parser.add_argument("--rps", type=float, default=100.0, help="requests per second (default: 100)")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measured load (default: 20)")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="load before measuring, not counted (default: 2)")
    parser.add_argument("--mode", choices=MODES, default="off", help="how the API runs its LLM re-rank (see above)")
    parser.add_argument("--users-file", help="users.jsonl (or one id a line) to draw users from "
                                             "(default: <data>/world/users.jsonl)")
    parser.add_argument("--n-users", type=int, default=50, help="distinct users to cycle through (default: 50)")
    parser.add_argument("--k", type=int, default=10, help="items per request (default: 10)")
    parser.add_argument("--warm-timeout", type=float, default=900.0,
                        help="mode warm: seconds allowed to get every user's re-rank cached (default: 900)")
    parser.add_argument("--json", help="also write the figures to this file")


def run(args: argparse.Namespace, settings: Settings) -> int:
    url = _check_url(args.url or f"http://127.0.0.1:{settings.serving.port}")
    if not 0 < args.rps <= MAX_RPS or not 0 < args.seconds <= MAX_SECONDS or not 0 <= args.warmup_seconds <= 60:
        raise UserError(f"need 0 < --rps <= {MAX_RPS}, 0 < --seconds <= {MAX_SECONDS}, 0 <= --warmup-seconds <= 60")
    if args.n_users < 1 or args.k < 1:
        raise UserError("--n-users and --k must be >= 1")
    users = _users(Path(args.users_file) if args.users_file else settings.data_path / "world" / "users.jsonl",
                   args.n_users)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO
    # A trusted service's token: like a web backend, the bench asks for many users.
    headers = bearer_header(settings, ["recommend:any"], name="bench-serve", ttl_days=1)
    figures = asyncio.run(_bench(url, headers, users, args))
    _print(figures, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if args.mode in ("off", "warm"):
        p99 = figures["e2e_ms"].get("p99", math.inf)
        met = p99 <= GOAL_P99_MS and not figures["errors"]
        print(f"goal p99 <= {GOAL_P99_MS:.0f} ms at {args.rps:g} rps without a synchronous LLM call: "
              f"{'met' if met else 'MISSED'} (p99 {p99:.1f} ms, {sum(figures['errors'].values())} errors)")
        return 0 if met else 1
    return 0


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.hostname not in LOOPBACK:
        raise UserError(f"--url must be an http(s) URL on this machine ({', '.join(sorted(LOOPBACK))}), got {url!r}")
    return url.rstrip("/")


def _users(path: Path, n: int) -> list[str]:
    """The first ``n`` user ids of a users.jsonl (``user_id`` field) or a plain list, one a line."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as e:
        raise UserError(f"cannot read users from {path} ({e.strerror}); pass --users-file") from None
    users = []
    for line in lines[:n]:
        if line.startswith("{"):
            try:
                users.append(str(json.loads(line)["user_id"]))
            except (ValueError, KeyError):
                raise UserError(f"{path}: a JSON line without user_id: {line[:80]}") from None
        else:
            users.append(line)
    if not users:
        raise UserError(f"{path} names no users")
    return users


async def _bench(url: str, headers: dict, users: list[str], args: argparse.Namespace) -> dict:
    import httpx

    # Idle connections expire before uvicorn's 5 s keep-alive closes them, so none is reused as it closes.
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=REQUEST_TIMEOUT_S) as client:
        first = await _get(client, users[0], args.k)
        _check_mode(first["rerank"]["status"], args.mode)
        if args.mode == "warm":
            await _warm(client, users, args.k, args.warm_timeout)
        if args.warmup_seconds:
            await _load(client, users, args.k, args.rps, args.warmup_seconds, Results())
        results = Results()
        started = time.perf_counter()
        await _load(client, users, args.k, args.rps, args.seconds, results)
        elapsed = time.perf_counter() - started
    asked = sum(n for status, n in results.rerank.items() if status not in NOT_ASKED)
    fell_back = sum(n for status, n in results.rerank.items() if status not in NOT_ASKED | APPLIED)
    return {
        "mode": args.mode, "url": url, "rps_target": args.rps, "seconds": args.seconds, "users": len(users),
        "sent": results.sent, "answered": len(results.e2e_ms), "dropped": results.dropped,
        "achieved_rps": round(len(results.e2e_ms) / elapsed, 1),
        "e2e_ms": _percentiles(results.e2e_ms),
        "stages_ms": {stage: _percentiles(v) for stage, v in results.stages_ms.items()},
        "errors": dict(results.errors),
        "rerank_statuses": dict(results.rerank),
        "llm_fallback_rate": round(fell_back / asked, 4) if asked else None,
        "cache_age_s": _percentiles(results.cache_age_s) if results.cache_age_s else None,
    }


def _check_mode(status: str, mode: str) -> None:
    if mode == "off" and status != "disabled":
        raise UserError("--mode off needs the API started with the LLM off (STREAMREC_LLM__ENABLED=false)")
    if mode != "off" and status == "disabled":
        raise UserError(f"--mode {mode} needs the API started with the LLM on (llm.enabled)")


async def _get(client, user: str, k: int) -> dict:
    import httpx

    try:
        resp = await client.get("/recommend", params={"user_id": user, "k": k})
    except httpx.HTTPError as e:
        raise UserError(f"the API at {client.base_url} does not answer ({type(e).__name__}: {e}); "
                        "start it with `streamrec serve`") from None
    if resp.status_code != 200:
        raise UserError(f"GET /recommend?user_id={user} answered HTTP {resp.status_code}: {resp.text[:300]}")
    return resp.json()


async def _warm(client, users: list[str], k: int, timeout_s: float) -> None:
    """Ask for every user until each one's answer comes from the re-rank cache."""
    deadline = time.monotonic() + timeout_s
    for n, user in enumerate(users, 1):
        while (await _get(client, user, k))["rerank"]["status"] != "cached":
            if time.monotonic() > deadline:
                raise UserError(f"warming took over {timeout_s:.0f}s ({n - 1}/{len(users)} users cached); "
                                "raise --warm-timeout or lower --n-users")
            await asyncio.sleep(0.2)
        print(f"\rwarm: {n}/{len(users)} users cached", end="", flush=True)
    print()


async def _load(client, users: list[str], k: int, rps: float, seconds: float, results: Results) -> None:
    loop = asyncio.get_running_loop()
    n = int(rps * seconds)
    start = loop.time() + 0.05
    in_flight: set[asyncio.Task] = set()
    for i in range(n):
        delay = start + i / rps - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= MAX_IN_FLIGHT:
            results.dropped += 1
            continue
        results.sent += 1
        task = asyncio.create_task(_one(client, users[i % len(users)], k, start + i / rps, results))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)


async def _one(client, user: str, k: int, scheduled: float, results: Results) -> None:
    import httpx

    try:
        resp = await client.get("/recommend", params={"user_id": user, "k": k})
    except httpx.HTTPError as e:
        results.errors[type(e).__name__] += 1
        return
    e2e_ms = (asyncio.get_running_loop().time() - scheduled) * 1000.0
    if resp.status_code != 200:
        results.errors[f"HTTP {resp.status_code}"] += 1
        return
    results.record(e2e_ms, resp.json())


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2),
            "max": round(max(values), 2), "n": len(values)}


def _print(f: dict, args: argparse.Namespace) -> None:
    print(f"mode {f['mode']}: {f['sent']} requests over {f['seconds']:g}s to {f['url']} "
          f"({f['achieved_rps']} rps answered, target {f['rps_target']:g}), {f['users']} users, k={args.k}")
    print(f"{'':<12}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  (ms)")
    rows = [("end-to-end", f["e2e_ms"]), *f["stages_ms"].items()]
    for name, p in rows:
        if p:
            print(f"{name:<12}{p['p50']:>9.2f}{p['p95']:>9.2f}{p['p99']:>9.2f}{p['max']:>9.2f}")
    print(f"errors: {f['errors'] or 'none'}; dropped (over {MAX_IN_FLIGHT} in flight): {f['dropped']}")
    rate = f["llm_fallback_rate"]
    print(f"re-rank: {f['rerank_statuses']}; LLM fallback rate: {'n/a (LLM off)' if rate is None else f'{rate:.1%}'}")
    ages = f["cache_age_s"]
    if ages:
        print(f"cached re-rank age (s): p50 {ages['p50']}, p95 {ages['p95']}, max {ages['max']}")
    elif f["rerank_statuses"].get("cached"):
        print("cached re-rank age: not reported by the re-ranker (RerankResult has no cache age)")
