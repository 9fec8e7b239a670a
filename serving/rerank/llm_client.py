"""One chat-completions call through the ``openai`` client: a JSON-schema answer (``complete``), or the
next token's likeliest alternatives after a prefilled answer (``next_tokens``, for scored intents).

The same code talks to OpenAI, any OpenAI-compatible server and the embedded llama-server;
``serving.rerank.endpoint.resolve_endpoint`` decides which from the settings. No retries: the re-ranker has a
latency budget and a W&D fallback, so a failed call is reported, not repeated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import openai
from openai import OpenAI

from serving.rerank.endpoint import resolve_endpoint
from streamrec.config import Settings

# OpenAI's maximum; llama-server returns as many. Enough to see every allowed value's first token.
TOP_LOGPROBS = 20


@dataclass(frozen=True)
class Completion:
    text: str | None
    refusal: str | None  # OpenAI's structured-output refusal field
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


@dataclass(frozen=True)
class NextTokens:
    top: tuple[tuple[str, float], ...]  # (token text, log-probability), likeliest first
    prompt_tokens: int
    latency_ms: float


class LLMError(RuntimeError):
    """A call that got no answer; ``kind`` is "timeout" or "error"."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class LLMClient:
    def __init__(self, base_url: str, api_key: str, model: str, timeout_s: float):
        self.model = model
        self._client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0)

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMClient:
        base_url, api_key, model = resolve_endpoint(settings)
        return cls(base_url, api_key, model, settings.llm.timeout_seconds)

    def complete(self, messages: list[dict], response_format: dict, max_tokens: int) -> Completion:
        start = time.monotonic()
        resp = self._create(messages=messages, response_format=response_format, max_completion_tokens=max_tokens)
        latency_ms = (time.monotonic() - start) * 1000.0
        choice, usage = resp.choices[0], resp.usage
        return Completion(
            text=choice.message.content,
            refusal=getattr(choice.message, "refusal", None),
            finish_reason=choice.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
        )

    def next_tokens(self, messages: list[dict], answer_prefix: str, top: int = TOP_LOGPROBS) -> NextTokens:
        """The likeliest next tokens after the assistant's answer so far (``answer_prefix``, continued by
        servers that prefill a final assistant message, as llama-server does)."""
        start = time.monotonic()
        resp = self._create(messages=[*messages, {"role": "assistant", "content": answer_prefix}],
                            max_completion_tokens=1, logprobs=True, top_logprobs=top)
        latency_ms = (time.monotonic() - start) * 1000.0
        logprobs = resp.choices[0].logprobs
        if logprobs is None or not logprobs.content:
            raise LLMError("error", "the endpoint returned no logprobs")
        usage = resp.usage
        return NextTokens(
            top=tuple((t.token, t.logprob) for t in logprobs.content[0].top_logprobs),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            latency_ms=latency_ms,
        )

    def _create(self, **params):
        """One chat completion, greedy and seeded; an answer without choices is an error."""
        try:
            resp = self._client.chat.completions.create(model=self.model, temperature=0, seed=0, **params)
        except openai.APITimeoutError as e:
            raise LLMError("timeout", str(e)) from e
        except openai.APIStatusError as e:
            raise LLMError("error", f"HTTP {e.status_code}: {e.message}") from e
        except openai.OpenAIError as e:  # connection refused, unparseable response, ...
            raise LLMError("error", f"{type(e).__name__}: {e}") from e
        if not resp.choices:
            raise LLMError("error", "no choices in the response")
        return resp

    def close(self) -> None:
        self._client.close()
