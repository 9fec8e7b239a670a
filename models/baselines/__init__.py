"""Baseline recommenders, all behind the ``Recommender`` protocol: popularity, item-KNN, BPR matrix factorization."""
from models.baselines.bpr import BPR
from models.baselines.itemknn import ItemKNN
from models.baselines.popularity import MostPopular
from models.baselines.recommender import Recommender

__all__ = ["BPR", "ItemKNN", "MostPopular", "Recommender"]
