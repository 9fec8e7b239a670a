"""``streamrec bench serve``: open-loop load on the recommend API, at one or more request rates.

Requests leave on a fixed schedule (``--rates``, or one ``--rps``) whatever the answers do, so a slow
server meets the same load a real one would; each latency is taken from the scheduled send time, so the
client's own queueing counts too. Bounded: rate x ``--seconds`` requests at most per rate, at most
MAX_IN_FLIGHT at once (beyond: counted as dropped), loopback URLs only. The rates run back to back, each
after ``--warmup-seconds`` of uncounted load at that rate.

Against the running API by default; ``--url`` with several comma-separated URLs (API replicas) spreads the
requests round-robin so that each user is asked of every replica in turn, back to back, and reports how often
the replicas' answers (the item order) agree: with the shared Redis re-rank cache they should always.
With ``--catalogs 1000,10000,100000``, against a synthetic stack of
each size that the bench builds, runs and removes itself (``benchmarks.stack``), in modes off and warm.

``--floor``: before the load, the Predict request the API sends for one user (made by the API's own
pipeline up to scoring, ``Pipeline.shortlist``) is sent straight to the model server through the official
gRPC stub, on the same schedule at the same rates: the least a request can cost. Each row then shows
API p99 / floor p99.

Printed: one row per (catalog, mode, rate): answered rps, dropped, end-to-end p50/p95/p99, per-stage
p50/p99 (the response's ``timings_ms``), errors, and the floor; and for each run the re-rank statuses
with the LLM fallback rate and the age of the cached re-ranks served. Modes, matching how the API runs:
- ``off``: the API runs with ``llm.enabled: false``;
- ``warm``: LLM on, and every user's re-rank is cached before the load (no LLM call on the hot path);
- ``llm``: LLM on, cold cache: requests wait up to ``llm.budget_ms`` for the LLM, then fall back
  (against a running API only: the synthetic stack's LLM answers at once, so there is nothing to measure).
Goals, modes off and warm: p99 <= 20 ms at 100 rps (every row up to GOAL_RPS is judged); with several
catalogs, p99 at the largest within 20 % of p99 at the smallest (same mode and rate). Exit code 1 when missed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from streamrec.addresses import LOOPBACK
from streamrec.auth import bearer_header
from streamrec.config import Settings
from streamrec.errors import UserError

GOAL_P99_MS = 20.0
GOAL_RPS = 100.0
GOAL_CATALOG_RATIO = 1.2
MODES = ("off", "warm", "llm")
CATALOG_MODES = ("off", "warm")
MAX_RPS = 2000
MAX_SECONDS = 600
MAX_IN_FLIGHT = 256
MAX_CATALOG_ITEMS = 100_000  # the world's item ids have five digits
REQUEST_TIMEOUT_S = 10.0
# Re-rank statuses that mean "the LLM was asked for nothing": not fallbacks.
NOT_ASKED = {"disabled"}
APPLIED = {"applied", "cached"}
STAGE_COLUMNS = ("features", "candidates", "scoring", "diversity", "rerank", "total")


class Failed(Exception):
    """A request that got no usable answer; the message is its kind (the error counts' key)."""


@dataclass
class Results:
    e2e_ms: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)  # in the pipeline's order, as answered
    errors: Counter = field(default_factory=Counter)
    rerank: Counter = field(default_factory=Counter)
    cache_age_s: list[float] = field(default_factory=list)
    orders: dict[int, tuple[str, ...]] = field(default_factory=dict)  # request number -> the item ids answered
    dropped: int = 0
    sent: int = 0

    def record(self, e2e_ms: float, body: dict | None, i: int) -> None:
        """``body``: the API's answer to request ``i``; None for the floor's, which has nothing but its latency."""
        self.e2e_ms.append(e2e_ms)
        if body is None:
            return
        self.orders[i] = tuple(item["item_id"] for item in body["items"])
        for stage, ms in body["timings_ms"].items():
            self.stages_ms.setdefault(stage, []).append(ms)
        self.rerank[body["rerank"]["status"]] += 1
        if body["rerank"].get("cache_age_s") is not None:
            self.cache_age_s.append(body["rerank"]["cache_age_s"])


def _numbers(kind: type, what: str) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: a comma-separated list of numbers, got {text!r}") from None
    return parse


def _modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(MODES)}; got {text!r}")
    return modes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the API's base URL, loopback only (default: http://127.0.0.1:<serving.port>); "
                                      "several, comma-separated (replicas): round-robin, each user asked of every one "
                                      "in turn, and whether their answers agree")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--rps", type=float, help="one request rate (default: 100)")
    rate.add_argument("--rates", type=_numbers(float, "--rates"),
                      help="request rates run back to back, e.g. 50,100,200")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="length of the measured load per rate (default: 20)")
    parser.add_argument("--warmup-seconds", type=float, default=2.0,
                        help="load before each rate's measure, not counted (default: 2)")
    parser.add_argument("--mode", type=_modes,
                        help=f"how the API runs its LLM re-rank (see above): one of {', '.join(MODES)} "
                             "(default: off); with --catalogs a list (default: off,warm)")
    parser.add_argument("--catalogs", type=_numbers(int, "--catalogs"),
                        help="build, run and remove a synthetic stack of each of these item counts "
                             "(e.g. 1000,10000,100000) instead of using the running API")
    parser.add_argument("--catalog-users", type=int, default=500,
                        help="with --catalogs: users in each synthetic world (default: 500)")
    parser.add_argument("--floor", action="store_true",
                        help="also measure a raw gRPC Predict of the same batch, at the same rates, and the ratio")
    parser.add_argument("--users-file", help="users.jsonl (or one id a line) to draw users from "
                                             "(default: <data>/world/users.jsonl)")
    parser.add_argument("--n-users", type=int, default=50, help="distinct users to cycle through (default: 50)")
    parser.add_argument("--k", type=int, default=10, help="items per request (default: 10)")
    parser.add_argument("--warm-timeout", type=float, default=900.0,
                        help="mode warm: seconds allowed to get every user's re-rank cached (default: 900)")
    parser.add_argument("--json", help="also write the figures to this file")


def run(args: argparse.Namespace, settings: Settings) -> int:
    rates = args.rates or [args.rps or 100.0]
    if not all(0 < r <= MAX_RPS for r in rates) or not 0 < args.seconds <= MAX_SECONDS \
            or not 0 <= args.warmup_seconds <= 60:
        raise UserError(f"need 0 < each rate <= {MAX_RPS}, 0 < --seconds <= {MAX_SECONDS}, 0 <= --warmup-seconds <= 60")
    if args.n_users < 1 or args.k < 1:
        raise UserError("--n-users and --k must be >= 1")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO
    rows = _catalog_runs(args, settings, rates) if args.catalogs else _api_runs(args, settings, rates)
    _print_table(rows, args.k)
    goals = _goals(rows)
    for line, _ in goals:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "goals": [g for g, _ in goals]}, indent=2) + "\n",
                                   encoding="utf-8")
    return 0 if all(met for _, met in goals) else 1


def _api_runs(args: argparse.Namespace, settings: Settings, rates: list[float]) -> list[dict]:
    """The running API, in the one mode it was started in."""
    modes = args.mode or ["off"]
    if len(modes) != 1:
        raise UserError("a running API has one mode: give one --mode (several need --catalogs)")
    urls = [_check_url(u) for u in (args.url or f"http://127.0.0.1:{settings.serving.port}").split(",") if u.strip()]
    users = _users(Path(args.users_file) if args.users_file else settings.data_path / "world" / "users.jsonl",
                   args.n_users)
    floor = _floor(settings, users[0], rates, args) if args.floor else None
    return _mode_runs(urls, settings, users, modes[0], rates, args, None, floor)


def _catalog_runs(args: argparse.Namespace, settings: Settings, rates: list[float]) -> list[dict]:
    """A synthetic stack per catalog size: floor first (if asked), then each mode's API at every rate."""
    from benchmarks.stack import running_api, synthetic_stack

    modes = args.mode or list(CATALOG_MODES)
    if args.url or args.users_file:
        raise UserError("--catalogs builds its own stacks: --url and --users-file are for a running API")
    if "llm" in modes:
        raise UserError("--catalogs runs modes off and warm; mode llm measures a real LLM: run it against your API")
    if not all(1 <= n <= MAX_CATALOG_ITEMS for n in args.catalogs) or args.catalog_users < 1:
        raise UserError(f"need 1 <= each catalog <= {MAX_CATALOG_ITEMS} items and --catalog-users >= 1")
    rows = []
    for items in args.catalogs:
        with synthetic_stack(settings, items, args.catalog_users) as stack:
            users = _users(stack.world_dir / "users.jsonl", args.n_users)
            floor = _floor(stack.settings, users[0], rates, args, items) if args.floor else None
            for mode in modes:
                with running_api(stack, mode) as url:
                    rows += _mode_runs([url], stack.settings, users, mode, rates, args, items, floor)
    return rows


def _mode_runs(urls: list[str], settings: Settings, users: list[str], mode: str, rates: list[float],
               args: argparse.Namespace, catalog: int | None, floor: dict | None) -> list[dict]:
    # A trusted service's token: like a web backend, the bench asks for many users.
    headers = bearer_header(settings, ["recommend:any"], name="bench-serve", ttl_days=1)
    rows = asyncio.run(_bench(urls, headers, users, mode, rates, args, catalog))
    for row in rows:
        row["floor_ms"] = floor[row["rps_target"]] if floor else None
        floor_p99 = (row["floor_ms"] or {}).get("p99")
        api_p99 = row["e2e_ms"].get("p99")
        row["p99_over_floor"] = round(api_p99 / floor_p99, 2) if api_p99 and floor_p99 else None
    return rows


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


# ---------------------------------------------------------------- the API


async def _bench(urls: list[str], headers: dict, users: list[str], mode: str, rates: list[float],
                 args: argparse.Namespace, catalog: int | None) -> list[dict]:
    # aiohttp, not httpx: ~1.1 ms of client CPU a request against ~2.7, and the client shares the 2 cores it measures.
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    rows = []
    async with contextlib.AsyncExitStack() as stack:
        clients = []
        for url in urls:
            # Idle connections expire before uvicorn's 5 s keep-alive closes them, so none is reused as it closes.
            connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT, keepalive_timeout=2.0)
            clients.append(await stack.enter_async_context(
                aiohttp.ClientSession(base_url=url, headers=headers, connector=connector, timeout=timeout)))
        for client in clients:
            first = await _get(client, users[0], args.k)
            _check_mode(first["rerank"]["status"], mode)
            if mode == "warm":  # each replica: with in-process caches, each has its own
                await _warm(client, users, args.k, args.warm_timeout)

        async def call(i: int) -> dict:
            # Request i goes to replica i mod R, for user i div R: each user is asked of every replica back to back.
            client, user = clients[i % len(clients)], users[i // len(clients) % len(users)]
            try:
                async with client.get("/recommend", params={"user_id": user, "k": str(args.k)}) as resp:
                    if resp.status != 200:
                        raise Failed(f"HTTP {resp.status}")
                    return await resp.json()
            except (TimeoutError, aiohttp.ClientError) as e:
                raise Failed(type(e).__name__) from None

        for rps in rates:
            results, elapsed = await _measure(call, rps, args)
            rows.append(_figures(results, elapsed, catalog, mode, urls, rps, args.seconds, len(users)))
            _print_run(rows[-1])
    return rows


def _figures(results: Results, elapsed: float, catalog: int | None, mode: str, urls: list[str], rps: float,
             seconds: float, users: int) -> dict:
    asked = sum(n for status, n in results.rerank.items() if status not in NOT_ASKED)
    fell_back = sum(n for status, n in results.rerank.items() if status not in NOT_ASKED | APPLIED)
    return {
        "catalog": catalog, "mode": mode, "url": ",".join(urls), "rps_target": rps, "seconds": seconds, "users": users,
        "sent": results.sent, "answered": len(results.e2e_ms), "dropped": results.dropped,
        "achieved_rps": round(len(results.e2e_ms) / elapsed, 1),
        "e2e_ms": _percentiles(results.e2e_ms),
        "stages_ms": {stage: _percentiles(v) for stage, v in results.stages_ms.items()},
        "errors": dict(results.errors),
        "rerank_statuses": dict(results.rerank),
        "llm_fallback_rate": round(fell_back / asked, 4) if asked else None,
        "cache_age_s": _percentiles(results.cache_age_s) if results.cache_age_s else None,
        "replicas_agree": _agreement(results.orders, len(urls)) if len(urls) > 1 else None,
    }


def _agreement(orders: dict[int, tuple[str, ...]], replicas: int) -> dict:
    """Of the rounds (one user asked of every replica back to back) all of whose requests were answered, those
    whose answers list the same items in the same order."""
    rounds: dict[int, list[tuple[str, ...]]] = {}
    for i, order in orders.items():
        rounds.setdefault(i // replicas, []).append(order)
    complete = [answers for answers in rounds.values() if len(answers) == replicas]
    agreed = sum(len(set(answers)) == 1 for answers in complete)
    return {"rounds": len(complete), "agreed": agreed, "rate": round(agreed / len(complete), 4) if complete else None}


def _check_mode(status: str, mode: str) -> None:
    if mode == "off" and status != "disabled":
        raise UserError("--mode off needs the API started with the LLM off (STREAMREC_LLM__ENABLED=false)")
    if mode != "off" and status == "disabled":
        raise UserError(f"--mode {mode} needs the API started with the LLM on (llm.enabled)")


async def _get(client, user: str, k: int) -> dict:
    import aiohttp

    try:
        async with client.get("/recommend", params={"user_id": user, "k": str(k)}) as resp:
            if resp.status != 200:
                raise UserError(f"GET /recommend?user_id={user} answered HTTP {resp.status}: {(await resp.text())[:300]}")
            return await resp.json()
    except (TimeoutError, aiohttp.ClientError) as e:
        raise UserError(f"the API at --url does not answer ({type(e).__name__}: {e}); "
                        "start it with `streamrec serve`") from None


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


# ---------------------------------------------------------------- the floor


def _floor(settings: Settings, user: str, rates: list[float], args: argparse.Namespace,
           catalog: int | None = None) -> dict[float, dict]:
    """The floor's latency percentiles per rate."""
    request, candidates = _predict_request(settings, user)
    m = settings.model
    address = f"{m.host}:{m.grpc_port}"
    print(f"floor: Predict ({request.model_spec.signature_name}, {candidates} candidates of user {user}) "
          f"straight to {address}" + (f", catalog {catalog}" if catalog else ""), flush=True)
    return asyncio.run(_floor_load(address, request, rates, args))


def _predict_request(settings: Settings, user: str):
    """The PredictRequest the API sends for ``user`` now, and its candidate count: the API's own pipeline
    (Feast, the candidate generator, the catalog, ``Scorer``) runs up to scoring, and its inputs are kept."""
    from tensorflow_serving.apis import predict_pb2

    from features.store import FeatureStoreClient
    from models.retrieval import CandidateGenerator, retrieval_dir
    from serving.pipeline import ItemCatalog, Pipeline, Scorer
    from serving.tf_client import PredictClient, tensor_proto

    sent: dict = {}

    class Recording(PredictClient):
        def predict_versioned(self, inputs, signature="serving_default", version=None):
            sent.update(inputs=dict(inputs), signature=signature)
            return super().predict_versioned(inputs, signature, version)

    store = FeatureStoreClient(settings)
    generator = CandidateGenerator.load(retrieval_dir(settings))
    catalog = ItemCatalog.load(store, list(generator.catalog.ids))
    m = settings.model
    with Recording(m.host, m.grpc_port, m.name) as client:
        # shortlist stops before the re-rank, so no re-ranker is needed
        short = Pipeline(settings, store, generator, Scorer(client), None, catalog).shortlist(user)
    if not sent or short.model is None:
        raise UserError(f"--floor: the model server at {m.host}:{m.grpc_port} did not score user {user}'s "
                        f"candidates ({', '.join(short.fallbacks) or 'no candidates'})")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = m.name
    request.model_spec.signature_name = sent["signature"]
    for name, value in sent["inputs"].items():
        request.inputs[name].CopyFrom(tensor_proto(value))
    return request, len(sent["inputs"]["item_id"])


async def _floor_load(address: str, request, rates: list[float], args: argparse.Namespace) -> dict[float, dict]:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from serving.tf_client import MAX_MESSAGE_BYTES

    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
    floor = {}
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def call(i: int) -> None:
            try:
                await stub.Predict(request, timeout=REQUEST_TIMEOUT_S)
            except grpc.aio.AioRpcError as e:
                raise Failed(f"gRPC {e.code().name}") from None

        for rps in rates:
            results, _ = await _measure(call, rps, args)
            floor[rps] = {**_percentiles(results.e2e_ms), "errors": dict(results.errors), "dropped": results.dropped}
            p = floor[rps]
            print(f"floor at {rps:g} rps: p50 {p.get('p50', math.nan):.2f} ms, p99 {p.get('p99', math.nan):.2f} ms, "
                  f"errors {p['errors'] or 'none'}", flush=True)
    return floor


# ---------------------------------------------------------------- open-loop load


async def _measure(call: Callable[[int], Awaitable], rps: float, args: argparse.Namespace) -> tuple[Results, float]:
    """Warm-up then the measured load at ``rps``; the results and the measure's wall time."""
    if args.warmup_seconds:
        await _load(call, rps, args.warmup_seconds, Results())
    results = Results()
    started = time.perf_counter()
    await _load(call, rps, args.seconds, results)
    return results, time.perf_counter() - started


async def _load(call: Callable[[int], Awaitable], rps: float, seconds: float, results: Results) -> None:
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
        task = asyncio.create_task(_one(call, i, start + i / rps, results))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.wait(in_flight)


async def _one(call: Callable[[int], Awaitable], i: int, scheduled: float, results: Results) -> None:
    try:
        answer = await call(i)
    except Failed as e:
        results.errors[str(e)] += 1
        return
    e2e_ms = (asyncio.get_running_loop().time() - scheduled) * 1000.0
    results.record(e2e_ms, answer, i)


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {"p50": round(cuts[49], 2), "p95": round(cuts[94], 2), "p99": round(cuts[98], 2),
            "max": round(max(values), 2), "n": len(values)}


# ---------------------------------------------------------------- report


def _print_run(f: dict) -> None:
    """One line as each run ends: what the table has no room for."""
    where = f"catalog {f['catalog']}, " if f["catalog"] else ""
    p99 = f["e2e_ms"].get("p99", math.nan)
    rate = f["llm_fallback_rate"]
    ages = f["cache_age_s"]
    agree = f["replicas_agree"]
    print(f"{where}mode {f['mode']}, {f['rps_target']:g} rps: {f['answered']}/{f['sent']} answered "
          f"({f['achieved_rps']} rps), p99 {p99:.2f} ms; re-rank {f['rerank_statuses']}, LLM fallback rate "
          f"{'n/a (LLM off)' if rate is None else f'{rate:.1%}'}"
          + (f", cached re-rank age p50 {ages['p50']} s, max {ages['max']} s" if ages else "")
          + (f"; replicas agree in {agree['agreed']}/{agree['rounds']} rounds" if agree else ""), flush=True)


def _print_table(rows: list[dict], k: int) -> None:
    first = rows[0]
    print(f"\n{first['seconds']:g}s per rate, {first['users']} users, k={k}, open loop; latencies in ms; "
          "stages: p50/p99 from the response's timings_ms")
    header = (f"{'catalog':>8} {'mode':<5}{'rate':>6}{'rps':>7}{'drop':>6}{'e2e p50':>9}{'p95':>8}{'p99':>8}  "
              + "".join(f" {s:>11}" for s in STAGE_COLUMNS) + f"  {'floor p50':>9}{'p99':>7}{'API/fl':>7}  errors")
    print(header)
    for f in rows:
        e2e, stages, floor = f["e2e_ms"], f["stages_ms"], f["floor_ms"] or {}
        ratio = f["p99_over_floor"]
        print(f"{f['catalog'] or '-':>8} {f['mode']:<5}{f['rps_target']:>6g}{f['achieved_rps']:>7.1f}{f['dropped']:>6}"
              f"{_ms(e2e, 'p50'):>9}{_ms(e2e, 'p95'):>8}{_ms(e2e, 'p99'):>8}  "
              + "".join(f" {_ms(stages.get(s, {}), 'p50') + '/' + _ms(stages.get(s, {}), 'p99'):>11}"
                        for s in STAGE_COLUMNS)
              + f"  {_ms(floor, 'p50'):>9}{_ms(floor, 'p99'):>7}{'-' if ratio is None else f'{ratio:.2f}':>7}"
              f"  {_errors(f)}")


def _ms(p: dict, key: str) -> str:
    if key not in p:
        return "-"
    return f"{p[key]:.1f}" if p[key] < 100 else f"{p[key]:.0f}"  # a saturated run's seconds still fit


def _errors(f: dict) -> str:
    errors = dict(f["errors"])
    if f["floor_ms"] and (f["floor_ms"]["errors"] or f["floor_ms"]["dropped"]):
        errors["floor"] = {**f["floor_ms"]["errors"], "dropped": f["floor_ms"]["dropped"]}
    return ", ".join(f"{kind}: {n}" for kind, n in errors.items()) or "none"


def _goals(rows: list[dict]) -> list[tuple[str, bool]]:
    """(line, met) for each goal that the rows can judge."""
    goals = []
    judged = [f for f in rows if f["mode"] in CATALOG_MODES and f["rps_target"] <= GOAL_RPS]
    if judged:
        missed = [f for f in judged if not (f["e2e_ms"].get("p99", math.inf) <= GOAL_P99_MS and not f["errors"])]
        goals.append((f"goal p99 <= {GOAL_P99_MS:.0f} ms up to {GOAL_RPS:g} rps without a synchronous LLM call: "
                      + (f"MISSED in {len(missed)}/{len(judged)} runs: "
                         + "; ".join(f"{_label(f)} p99 {f['e2e_ms'].get('p99', math.inf):.1f} ms, "
                                     f"{sum(f['errors'].values())} errors" for f in missed)
                         if missed else f"met in {len(judged)}/{len(judged)} runs"), not missed))
    catalogs = sorted({f["catalog"] for f in rows if f["catalog"]})
    if len(catalogs) > 1:
        by_key = {(f["catalog"], f["mode"], f["rps_target"]): f for f in rows}
        for mode, rps in dict.fromkeys((f["mode"], f["rps_target"]) for f in rows):
            small, large = by_key.get((catalogs[0], mode, rps)), by_key.get((catalogs[-1], mode, rps))
            if not (small and large and small["e2e_ms"] and large["e2e_ms"]):
                continue
            ratio = large["e2e_ms"]["p99"] / small["e2e_ms"]["p99"]
            met = ratio <= GOAL_CATALOG_RATIO
            line = (f"p99 at {catalogs[-1]} items / at {catalogs[0]} items, mode {mode}, {rps:g} rps: {ratio:.2f} "
                    f"(goal <= {GOAL_CATALOG_RATIO:.2f})")
            if rps <= GOAL_RPS:
                goals.append((f"{line}: {'met' if met else 'MISSED'}", met))
            else:
                goals.append((f"{line}, not judged above {GOAL_RPS:g} rps", True))
    return goals


def _label(f: dict) -> str:
    return (f"catalog {f['catalog']} " if f["catalog"] else "") + f"mode {f['mode']} at {f['rps_target']:g} rps"
