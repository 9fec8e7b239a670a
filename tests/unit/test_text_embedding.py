"""The item text encoder (all-MiniLM-L6-v2 in numpy, ``models.text_embedding``), on the real weights."""
from __future__ import annotations

import numpy as np
import pytest

from models.text_embedding import DIM, item_text, text_encoder


@pytest.fixture(scope="module")
def encoder():
    return text_encoder()


def test_embeddings_are_unit_vectors_and_similar_texts_are_closer(encoder):
    v = encoder.encode(["A dog is running in the park", "A puppy runs across the grass",
                        "Stock markets fell sharply today", ""])
    assert v.shape == (4, DIM) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sims = v @ v.T
    assert sims[0, 1] > 0.35 > 0.1 > max(sims[0, 2], sims[1, 2])


def test_padding_does_not_change_an_embedding(encoder):
    """A short text alone and in a batch padded to a long one: the mask keeps the padding out."""
    alone = encoder.encode(["Toy Story"])
    padded = encoder.encode(["Toy Story", "a much longer title " * 20])
    assert np.allclose(alone[0], padded[0], atol=1e-5)


def test_the_item_text_is_the_title_and_the_description_when_there_is_one():
    assert item_text({"title": "Heat"}) == "Heat"
    assert item_text({"title": "Heat", "description": "A heist in LA."}) == "Heat. A heist in LA."
