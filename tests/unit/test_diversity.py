import numpy as np
import pytest

from models.retrieval.sources import genre_vectors as catalog_vectors
from serving.diversity import mmr

GENRES = [["Action"], ["Action"], ["Action", "Sci-Fi"], ["Comedy"], ["Drama", "Romance"]]


def genre_vectors(genres_per_item: list[list[str]]) -> np.ndarray:
    """Unit genre rows as the pipeline gets them from the candidate generator."""
    ids = [str(n) for n in range(len(genres_per_item))]
    return catalog_vectors({i: {"genres": g} for i, g in zip(ids, genres_per_item)}, ids)
RELEVANCE = [0.9, 0.85, 0.8, 0.7, 0.1]


def test_lambda_one_keeps_the_relevance_order():
    assert mmr(RELEVANCE, genre_vectors(GENRES), lam=1.0, n=5) == [0, 1, 2, 3, 4]


def test_lower_lambda_lifts_a_different_genre_over_near_copies():
    picked = mmr(RELEVANCE, genre_vectors(GENRES), lam=0.5, n=3)
    assert picked[0] == 0  # the most relevant item always comes first
    assert picked[1] == 3  # the comedy beats two more action titles
    assert 1 not in picked[:2] and 2 not in picked[:2]


def test_lambda_zero_spreads_genres_as_far_as_possible():
    picked = mmr(RELEVANCE, genre_vectors(GENRES), lam=0.0, n=3)
    vectors = genre_vectors(GENRES)[picked]
    assert np.allclose(vectors @ vectors.T, np.eye(3), atol=1e-6)  # three mutually dissimilar items


def test_each_item_at_most_once_and_n_is_capped():
    picked = mmr(RELEVANCE, genre_vectors(GENRES), lam=0.3, n=50)
    assert sorted(picked) == list(range(len(GENRES)))
    assert mmr(RELEVANCE, genre_vectors(GENRES), lam=0.3, n=0) == []
    assert mmr([], np.zeros((0, 18)), lam=0.7, n=5) == []


def test_partial_genre_overlap_counts_as_partial_similarity():
    # Action/Sci-Fi is 0.71 similar to Action: at λ = 0.5 its relevance edge (0.5 scaled) does not make up for
    # it against a Comedy (0); at λ = 0.6 it does.
    vectors = genre_vectors([["Action"], ["Action", "Sci-Fi"], ["Comedy"]])
    assert mmr([1.0, 0.9, 0.8], vectors, lam=0.5, n=2) == [0, 2]
    assert mmr([1.0, 0.9, 0.8], vectors, lam=0.6, n=2) == [0, 1]


def test_equal_relevance_keeps_the_given_order_among_equals():
    assert mmr([0.5, 0.5, 0.5], genre_vectors([["Drama"], ["Comedy"], ["War"]]), lam=0.7, n=3) == [0, 1, 2]


def test_items_without_genres_are_similar_to_nothing():
    vectors = genre_vectors([["Action"], [], ["Action"]])
    assert mmr([1.0, 0.5, 0.9], vectors, lam=0.5, n=3) == [0, 1, 2]


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan")])
def test_bad_lambda_is_rejected(lam):
    with pytest.raises(ValueError, match="lambda"):
        mmr(RELEVANCE, genre_vectors(GENRES), lam=lam, n=3)


def test_mismatched_or_non_finite_input_is_rejected():
    with pytest.raises(ValueError, match="one vector per"):
        mmr(RELEVANCE, genre_vectors(GENRES[:3]), lam=0.5, n=3)
    with pytest.raises(ValueError, match="finite"):
        mmr([1.0, float("inf")], genre_vectors([["Action"], ["Drama"]]), lam=0.5, n=2)
    with pytest.raises(ValueError, match="n must be"):
        mmr(RELEVANCE, genre_vectors(GENRES), lam=0.5, n=-1)
