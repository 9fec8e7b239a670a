"""Baseline recommenders, all behind the ``Recommender`` protocol: popularity, item-KNN, session item-KNN, BPR and
ALS matrix factorization, and a sequential model (SASRec). ALS and SASRec import their heavy libraries (implicit,
Keras) only when fitted."""
from models.baselines.als import ALS
from models.baselines.bpr import BPR
from models.baselines.itemknn import ItemKNN
from models.baselines.popularity import MostPopular
from models.baselines.recommender import Recommender
from models.baselines.sequential import SASRec
from models.baselines.session_knn import SessionKNN

__all__ = ["ALS", "BPR", "ItemKNN", "MostPopular", "Recommender", "SASRec", "SessionKNN"]
