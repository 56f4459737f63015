"""Grouping queries by meaning with the real minilm encoder: written paraphrase groups come back as
exactly those groups, with or without the k-means seeding, with sizes, examples and typical wordings."""

from __future__ import annotations

import numpy as np
import pytest

from autocomplete.search import encode_queries
from embeddings.encoders import Encoder
from embeddings.query_groups import group_queries
from embeddings.vector_index import VectorIndex

# Differently worded questions about one need each; "pets" is a singleton and must stay one.
PARAPHRASES = {
    "refund": [
        "can I get my money back",
        "how do I request a refund",
        "refund for my order",
        "I want a refund please",
        "return an item for a refund",
    ],
    "delivery": [
        "how long does delivery take",
        "when will my package arrive",
        "shipping time to canada",
        "my parcel has not arrived yet",
        "delivery is late",
    ],
    "password": [
        "forgot my password",
        "cannot log in, reset password",
        "password reset link not working",
        "how to change my password",
    ],
    "dark mode": ["is there a dark mode", "switch the app to dark theme", "night mode for the interface"],
    "gift cards": ["do you sell gift cards", "buy a gift voucher"],
    "pets": ["can I bring my dog"],
}
TEXTS = [text for group in PARAPHRASES.values() for text in group]
INTENDED = {frozenset(group) for group in PARAPHRASES.values()}


@pytest.fixture(scope="module")
def vectors(minilm: Encoder) -> np.ndarray:
    return encode_queries(minilm, TEXTS)


@pytest.mark.parametrize("max_seeds", [len(TEXTS), 15], ids=["every-query-a-seed", "kmeans-seeds"])
def test_paraphrase_groups_are_recovered_exactly(vectors: np.ndarray, max_seeds: int) -> None:
    groups = group_queries(TEXTS, [1] * len(TEXTS), vectors, max_seeds=max_seeds)
    assert {frozenset(group.members) for group in groups} == INTENDED


def test_sizes_are_summed_counts_and_examples_the_most_searched(vectors: np.ndarray) -> None:
    counts = [1] * len(TEXTS)
    counts[TEXTS.index("delivery is late")] = 40
    counts[TEXTS.index("can I bring my dog")] = 7
    groups = group_queries(TEXTS, counts, vectors, examples=3)
    assert groups[0].size == 44  # delivery: 40 + four wordings searched once
    delivery = groups[0]
    assert delivery.wordings == 5 and delivery.examples[0] == "delivery is late" and len(delivery.examples) == 3
    assert [group.size for group in groups] == sorted((group.size for group in groups), reverse=True)
    assert sum(group.size for group in groups) == sum(counts)
    assert next(group for group in groups if group.typical == "can I bring my dog").size == 7


def test_typical_wording_is_the_one_closest_to_the_group_mean(vectors: np.ndarray) -> None:
    for group in group_queries(TEXTS, [1] * len(TEXTS), vectors):
        rows = [TEXTS.index(text) for text in group.members]
        mean = vectors[rows].mean(axis=0)
        closest = max(rows, key=lambda row: float(vectors[row] @ mean))
        assert group.typical == TEXTS[closest]


def test_nearest_question_comes_from_the_index(vectors: np.ndarray, minilm: Encoder) -> None:
    questions = ["How do I get a refund?", "How long does shipping take?", "How do I reset my password?"]
    index = VectorIndex.build(
        encode_queries(minilm, questions), [10, 20, 30], encoder="minilm", dimension=384, ann_threshold=100
    )
    nearest = {
        group.typical: group.nearest_id for group in group_queries(TEXTS, [1] * len(TEXTS), vectors, index=index)
    }
    by_group = {name: next(v for t, v in nearest.items() if t in group) for name, group in PARAPHRASES.items()}
    assert (by_group["refund"], by_group["delivery"], by_group["password"]) == (10, 20, 30)


def test_bad_input_is_refused_and_no_queries_make_no_groups(vectors: np.ndarray) -> None:
    assert group_queries([], [], np.zeros((0, 384), dtype=np.float32)) == []
    with pytest.raises(ValueError, match="one of each per query"):
        group_queries(TEXTS, [1], vectors)
    with pytest.raises(ValueError, match="at least 1"):
        group_queries(TEXTS, [0] * len(TEXTS), vectors)
