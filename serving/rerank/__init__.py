"""LLM re-ranking of the Wide & Deep top-N with the user's live context and an optional request.

| module | job |
|---|---|
| ``context`` | the inputs: ``Candidate``, ``LiveContext`` from a feature row, the context signature |
| ``prompt`` | the system/user messages for both modes (the re-rank prompt lives here) |
| ``schema`` | the ``response_format`` JSON schemas |
| ``validate`` | parsing and checking answers; ``complete_order``, the only-candidates gate |
| ``intent`` | intent mode's deterministic re-scoring and per-item reasons |
| ``intent_scoring`` | the scored decoder: an intent's fields from next-token probabilities |
| ``reasons`` | reasons of facts only (``fact_reason``), and what a reason claims falsely (``false_claims``) |
| ``intent_accuracy`` | the labelled requests (``labelled_requests.json``) and per-field accuracy |
| ``endpoint`` | which OpenAI-compatible endpoint is called (``resolve_endpoint``), the embedded models |
| ``llm_client`` | one chat-completions call through the openai client (an answer, or the next token's top) |
| ``cache`` | the bounded TTL LRU cache |
| ``fairness`` | ``FairQueue``: one pending call per user and client, the per-client rate limit |
| ``reranker`` | ``Reranker``: budget, background calls, cache, fallback, counters |
"""
from serving.rerank.context import (
    Candidate,
    LiveContext,
    context_signature,
    live_context,
)
from serving.rerank.reranker import RankedItem, Reranker, RerankResult

__all__ = ["Candidate", "LiveContext", "RankedItem", "RerankResult", "Reranker", "context_signature", "live_context"]
