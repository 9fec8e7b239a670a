"""``streamrec evaluate --rerank``: does the LLM re-rank lift Wide & Deep on sessions whose context shifts?

- ``sessions``: which held-out sessions of a synthetic world to score, their context type and relevant items (pure).
- ``lift``: NDCG@10 / HR@10 of two orders, paired bootstrap CIs, per-context-type tables, latencies (pure).
- ``run``: worlds, W&D training, scoring at each session's start, the re-rank calls, the mean over seeds.
- ``report``: ``rerank.md`` and ``rerank.json``.
"""
