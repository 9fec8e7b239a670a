"""A synthetic serving stack for ``streamrec bench serve --catalogs``: built, run and removed by the bench.

One stack per catalog size, in a temporary data dir, built with the project's own code the way
``tests/fixtures/serving_stack.py`` does: a world ending now (so its features are live), ``models.train.train``
(catalog and profiles into Feast, Wide & Deep exported with its ``rank`` signature, the candidate generator),
then the users' final session rows written online. Feast's online store is Redis, the production default, on a
free port; the model server and the API run as daemons (``infra.process``) on free ports, in processes of their
own as in production, so the bench's client does not share their interpreter.

The W&D is the default architecture (what serving pays for depends on the layer sizes, not on how long it
trained) trained for one epoch. The API runs without the re-rank worker (no broker here). Mode ``warm`` needs an
LLM only to fill the re-rank cache before the load, as the measured requests are all cache hits: ``InstantLLM``
answers at once with a valid re-rank, so warming takes seconds where the embedded model needs seconds per user.
"""
from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

from infra import process
from infra.process import Service, free_port
from streamrec.config import LLMConfig, Settings

WORLD_DAYS, WORLD_SEED = 4.0, 13
# Loading 100,000 items from Feast and fitting nothing: still a minute or two on 2 busy cores.
API_START_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Stack:
    items: int
    settings: Settings  # data dir, Redis, model server and API ports; the LLM section is set per mode
    world_dir: Path


@contextlib.contextmanager
def synthetic_stack(base: Settings, items: int, users: int) -> Iterator[Stack]:
    """Build a stack of ``items`` items and ``users`` users and run Redis and the model server; all stopped
    and removed on leaving, on errors and Ctrl-C too. ``base``: the caller's settings (serving, features, auth)."""
    from infra.apps import model_server_service
    from infra.redis import redis_service
    from streamrec.auth import load_secret

    with contextlib.ExitStack() as cleanup:
        data_dir = cleanup.enter_context(
            tempfile.TemporaryDirectory(prefix=f"streamrec-bench-{items}-", ignore_cleanup_errors=True))
        settings = _settings(base, Path(data_dir))
        load_secret(settings)  # made now, so the API and the bench's tokens read one key file
        _note(items, f"data dir {data_dir}")
        _start(cleanup, redis_service(settings), items, "Redis (Feast's online store)")
        world_dir = _build(settings, items, users)
        _start(cleanup, model_server_service(settings), items, "the model server")
        yield Stack(items, settings, world_dir)


@contextlib.contextmanager
def running_api(stack: Stack, mode: str) -> Iterator[str]:
    """The API of ``stack`` in ``mode`` (off: ``llm.enabled: false``; warm: ``InstantLLM``); yields its URL."""
    from infra.apps import api_service

    settings = copy.deepcopy(stack.settings)
    with contextlib.ExitStack() as cleanup:
        if mode == "off":
            settings.llm.enabled = False
        else:
            llm = cleanup.enter_context(InstantLLM())
            base = stack.settings.llm
            settings.llm = LLMConfig(base_url=llm.base_url, api_key="bench", model="instant", mode=base.mode,
                                     budget_ms=base.budget_ms, timeout_seconds=base.timeout_seconds)
        svc = api_service(settings)
        svc.argv = [*svc.argv, "--no-with-worker"]
        svc.env = settings_env(settings)
        svc.start_timeout_s = API_START_TIMEOUT_S
        _start(cleanup, svc, stack.items, f"the API (mode {mode}; it loads the catalog)")
        yield f"http://127.0.0.1:{settings.serving.port}"


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as a ``STREAMREC_*`` variable: they outrank a config file and the caller's own
    variables, so the child runs with exactly these settings."""
    env = {}
    for section, values in settings.to_dict().items():
        if not isinstance(values, dict):
            env[f"STREAMREC_{section.upper()}"] = str(values)
            continue
        for key, value in values.items():
            text = json.dumps(value) if isinstance(value, dict) else str(value)
            env[f"STREAMREC_{section.upper()}__{key.upper()}"] = text
    return env


def _settings(base: Settings, data_dir: Path) -> Settings:
    settings = copy.deepcopy(base)
    settings.data_dir = str(data_dir)
    settings.feast.online_store = "redis"
    settings.feast.redis_connection = f"127.0.0.1:{free_port()}"
    settings.model.host, settings.model.grpc_port, settings.model.rest_port = "127.0.0.1", free_port(), free_port()
    settings.serving.host, settings.serving.port = "127.0.0.1", free_port()
    return settings


def _build(settings: Settings, items: int, users: int) -> Path:
    from features.offline import compute_features, read_event_log
    from features.store import FeatureStoreClient
    from models.train import EventLog, train
    from models.wide_deep import WideDeepConfig
    from streamrec.catalog import load_items
    from streams.generator import generate_world

    world_dir = settings.data_path / "world"
    _note(items, f"building: a world of {users} users over {WORLD_DAYS:g} days")
    started = time.monotonic()
    generate_world(world_dir, users=users, items=items, days=WORLD_DAYS, seed=WORLD_SEED,
                   start_ms=int(time.time() * 1000 - WORLD_DAYS * 86_400_000))
    events, items_path = world_dir / "events.jsonl", world_dir / "items.jsonl"
    _note(items, "training: catalog and profiles into Feast, Wide & Deep (1 epoch), the candidate generator")
    summary = train(settings, EventLog(events, items_path, f"bench-{items}"), config=WideDeepConfig(epochs=1))
    _note(items, f"trained version {summary['version']} on {summary['examples']} examples")
    _note(items, "loading: the users' last session rows into the online store")
    rows = compute_features(read_event_log(events), load_items(items_path), settings.features)
    FeatureStoreClient(settings).write_session_features(rows, "bench")
    _note(items, f"built in {time.monotonic() - started:.0f}s")
    return world_dir


def _start(cleanup: contextlib.ExitStack, svc: Service, items: int, what: str) -> None:
    _note(items, f"starting {what}")
    cleanup.callback(process.stop, svc)  # before the start: a Ctrl-C while it starts must stop it too
    started = time.monotonic()
    process.start(svc)
    _note(items, f"{svc.name} ready in {time.monotonic() - started:.1f}s")


def _note(items: int, text: str) -> None:
    print(f"[catalog {items}] {text}", flush=True)


class InstantLLM:
    """An OpenAI-compatible chat-completions endpoint on a free loopback port that answers at once with a
    valid re-rank for the request's response format: an intent, or the listwise candidates in their order."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _InstantHandler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, name="instant-llm", daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def instant_answer(body: dict) -> dict:
    """The content of a valid answer to a chat-completions request with a ``json_schema`` response format."""
    schema = body["response_format"]["json_schema"]
    if schema["name"] == "intent":
        return {"mood": "exciting", "genre": "none", "avoid_genre": "none", "preferred_length": "any",
                "reason": "Something exciting"}
    ranking = schema["schema"]["properties"]["ranking"]
    ids = ranking["items"]["properties"]["id"]["enum"][: ranking["maxItems"]]
    return {"ranking": [{"id": item_id, "reason": "Picked for you"} for item_id in ids]}


class _InstantHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if not self.path.endswith("/chat/completions"):
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        message = {"role": "assistant", "content": json.dumps(instant_answer(body)), "refusal": None}
        self._send(200, {
            "id": "chatcmpl-instant", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", ""), "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        })

    def _send(self, status: int, payload: dict) -> None:
        send_json(self, status, payload)

    def log_message(self, *args) -> None:  # one line a request would bury the bench's output
        pass


def send_json(handler, status: int, payload: dict) -> None:
    """Answer a ``BaseHTTPRequestHandler`` request with ``payload`` as JSON (the fake LLMs' one reply)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
