"""Candidate retrieval: MF inner-product top-K (exact below 20k items, a faiss IVF above), genre content for new items, contextual popularity,
and the mixer the recommend API calls (``CandidateGenerator``)."""
from models.retrieval.generator import Candidate, CandidateGenerator, MixerConfig, retrieval_dir
from models.retrieval.index import ExactIndex, FaissIVFIndex, IVFIndex, load_index
from models.retrieval.log import load_event_log
from models.retrieval.recall import recall_at_k_report, train_events

__all__ = [
    "Candidate", "CandidateGenerator", "ExactIndex", "FaissIVFIndex", "IVFIndex", "MixerConfig", "load_event_log", "load_index",
    "recall_at_k_report", "retrieval_dir", "train_events",
]
