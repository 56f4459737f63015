"""Tests for embeddings.ranking with hand-made unit vectors: no encoder needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from embeddings.lexical import LexicalIndex
from embeddings.ranking import (
    DEFAULT,
    RankingParams,
    Similarity,
    embedding_text,
    hybrid_rank,
    lexical_share,
    semantic_rank,
)

TEXTS = {
    10: "How do I protect myself from the coronavirus?",
    11: "Can my dog catch the virus?",
    12: "Where can I get tested?",
    13: "How long is the incubation period?",
    14: "Can my dog catch the virus",
}
# Corpus vectors on orthogonal axes (14 duplicates 11; the fifth axis is "off-topic"): cosine is
# then just a coordinate of the query vector.
VECTORS = {i: np.eye(5, dtype=np.float32)[min(n, 3)] for n, i in enumerate(TEXTS)}
VECTORS[14] = VECTORS[11]


@pytest.fixture(scope="module")
def lexical() -> LexicalIndex:
    return LexicalIndex(list(TEXTS), list(TEXTS.values()))


def searcher(query_vector: Sequence[float] | np.ndarray) -> tuple[list[tuple[int, float]], Similarity]:
    """Mimic a vector index: (all ids by cosine, a similarity callable) for a query vector."""
    q = np.asarray(query_vector, dtype=np.float32)
    q /= np.linalg.norm(q)

    def similarity(ids: Sequence[int]) -> npt.NDArray[np.float32]:
        return np.array([VECTORS[i] @ q for i in ids], dtype=np.float32)

    ranked = sorted(((i, float(v @ q)) for i, v in VECTORS.items()), key=lambda p: -p[1])
    return ranked, similarity


def rank(query: str, vector: Sequence[float], lexical: LexicalIndex, **overrides: Any) -> list[tuple[int, float]]:
    semantic, similarity = searcher(vector)
    params = replace(DEFAULT, **overrides)
    return hybrid_rank(
        query,
        semantic=semantic[: params.semantic_candidates],
        similarity=similarity,
        lexical=lexical,
        k=3,
        params=params,
    )


def test_lexical_prefix_match_beats_weak_semantic_match(lexical: LexicalIndex) -> None:
    # The half-typed "incub" embeds closer to item 12, but only item 13 has a word it begins.
    ranked = rank("incub", [0.2, 0.1, 0.55, 0.45, 0.0], lexical, min_score=0.0)
    assert ranked[0][0] == 13


def test_lexical_only_candidates_are_scored_semantically(lexical: LexicalIndex) -> None:
    # Only one semantic candidate is fetched; item 13 joins through the lexical index.
    ranked = rank("incubation period", [0.1, 0.1, 0.9, 0.4, 0.0], lexical, semantic_candidates=1)
    assert {i for i, _ in ranked} >= {12, 13}


def test_scores_stay_in_unit_range(lexical: LexicalIndex) -> None:
    for query in ("how", "can my dog catch the virus?", "where", "zz"):
        for _, score in rank(query, [1.0, -0.5, 0.2, 0.1, 0.0], lexical, min_score=0.0):
            assert 0.0 <= score <= 1.0


def test_cut_off_drops_gibberish(lexical: LexicalIndex) -> None:
    # Gibberish: no word matches and the embedding is close to nothing in the corpus.
    assert rank("xqzv wpmt", [0.1, 0.1, 0.1, 0.1, 1.0], lexical, min_score=0.3) == []


def test_cut_off_keeps_answerable_queries(lexical: LexicalIndex) -> None:
    ranked = rank("where can I get tes", [0.1, 0.1, 0.95, 0.1, 0.0], lexical, min_score=0.3)
    assert ranked[0][0] == 12


def test_identical_texts_are_shown_once(lexical: LexicalIndex) -> None:
    ranked = rank("can my dog catch", [0.0, 1.0, 0.0, 0.0, 0.0], lexical)
    assert [i for i, _ in ranked].count(11) + [i for i, _ in ranked].count(14) == 1


def test_ordering_is_best_first_and_stable(lexical: LexicalIndex) -> None:
    first = rank("how", [0.5, 0.5, 0.5, 0.5, 0.0], lexical, min_score=0.0)
    assert first == rank("how", [0.5, 0.5, 0.5, 0.5, 0.0], lexical, min_score=0.0)
    assert [s for _, s in first] == sorted((s for _, s in first), reverse=True)


def test_no_candidates_returns_nothing(lexical: LexicalIndex) -> None:
    assert hybrid_rank("zz", semantic=[], similarity=lambda ids: np.zeros(len(ids)), lexical=lexical, k=5) == []


def test_lexical_share_shifts_for_short_queries_and_stays_in_range() -> None:
    params = RankingParams(lexical_share=0.5, short_query_words=3, short_query_shift=0.4)
    assert lexical_share("how do I prot", params) == pytest.approx(0.5)
    assert lexical_share("how do I protect ", params) == pytest.approx(0.5)
    assert lexical_share("pro", params) == pytest.approx(1.0)
    assert lexical_share("pro", replace(params, lexical_share=0.0, short_query_shift=-0.4)) == 0.0


def test_semantic_rank_is_plain_cosine_without_cut_off(lexical: LexicalIndex) -> None:
    semantic = [(12, 0.05), (10, 0.9), (11, 0.4), (14, 0.4)]
    assert semantic_rank(semantic, k=2) == [(10, 0.9), (11, 0.4)]
    assert [i for i, _ in semantic_rank(semantic, k=5, lexical=lexical)] == [10, 11, 12]
    assert semantic_rank([], k=3) == []


@pytest.mark.parametrize(
    ("query", "embedded"),
    [
        ("Where can I get te", "Where can I get tested"),  # unfinished: completed from the corpus
        ("How long is the INCUB", "How long is the incubation"),
        ("how long is the i", "how long is the "),  # too short a stub: the words before it
        ("h", "h"),  # ... unless nothing comes before it
        ("Where can I get te ", "Where can I get te "),  # a finished word is left as typed
        ("Where can I get xyz", "Where can I get xyz"),  # no corpus word begins so
        ("dog?", "dog?"),
    ],
)
def test_embedding_text_completes_the_unfinished_word(lexical: LexicalIndex, query: str, embedded: str) -> None:
    assert embedding_text(query, lexical, RankingParams(complete_min_chars=2)) == embedded


def test_embedding_text_completion_can_be_switched_off(lexical: LexicalIndex) -> None:
    assert embedding_text("Where can I get te", lexical, RankingParams(complete_min_chars=0)) == "Where can I get te"


def test_runners_up_need_only_the_follow_score_once_the_best_clears_the_cut_off(lexical: LexicalIndex) -> None:
    # Cosine alone: item 12 (0.95) clears the cut-off, item 13 (0.32) only the follow score.
    cosine_only = {"lexical_share": 0.0, "short_query_shift": 0.0, "min_score": 0.5}
    vector = [0.0, 0.0, 0.9, 0.3, 0.0]
    assert [i for i, _ in rank("zzz", vector, lexical, follow_score=0.5, **cosine_only)] == [12]
    assert [i for i, _ in rank("zzz", vector, lexical, follow_score=0.1, **cosine_only)] == [12, 13]
    # When even the best (0.42) misses the cut-off, nothing is shown.
    assert rank("zzz", [0.0, 0.0, 0.4, 0.3, 0.8], lexical, follow_score=0.1, **cosine_only) == []


def stored_vectors(ids: Sequence[int]) -> npt.NDArray[np.float32]:
    return np.stack([VECTORS[i] for i in ids])


def feedback_rank(
    query: str, vector: Sequence[float] | np.ndarray, lexical: LexicalIndex, **overrides: Any
) -> dict[int, float]:
    semantic, similarity = searcher(vector)
    # Cosine alone and no cut-off, so each score is the (moved) query's cosine itself.
    params = replace(DEFAULT, lexical_share=0.0, short_query_shift=0.0)
    params = replace(params, **{"min_score": 0.0, "follow_score": 0.0, **overrides})
    ranked = hybrid_rank(
        query,
        semantic=semantic,
        similarity=similarity,
        lexical=lexical,
        k=5,
        params=params,
        vectors=stored_vectors,
    )
    return dict(ranked)


def test_feedback_moves_the_query_towards_the_best_lexical_match(lexical: LexicalIndex) -> None:
    # "incubation" picks text 13 lexically; the vague vector leans towards 12.
    vector = np.array([0.1, 0.0, 0.6, 0.3, 0.7], dtype=np.float32)
    q = vector / np.linalg.norm(vector)
    moved = q + 0.5 * VECTORS[13]
    moved /= np.linalg.norm(moved)
    scores = feedback_rank("incubation", vector, lexical, feedback_weight=0.5, feedback_docs=1)
    for pk, score in scores.items():
        assert score == pytest.approx(float(np.clip(moved @ VECTORS[pk], 0, 1)), abs=1e-5)
    assert next(iter(scores)) == 13
    assert next(iter(feedback_rank("incubation", vector, lexical, feedback_weight=0.0))) == 12


def test_feedback_averages_several_lexical_matches(lexical: LexicalIndex) -> None:
    vector = np.array([0.0, 0.0, 0.0, 0.0, 1.0], dtype=np.float32)
    # "can" is in texts 11, 12 and 14 (14 has 11's vector); the mean of two is taken.
    top = [i for i, _ in lexical.search("can", limit=2)]
    centroid = stored_vectors(top).mean(axis=0)
    moved = vector + 1.0 * centroid
    moved /= np.linalg.norm(moved)
    scores = feedback_rank("can", vector, lexical, feedback_weight=1.0, feedback_docs=2)
    for pk in top:
        assert scores[pk] == pytest.approx(float(moved @ VECTORS[pk]), abs=1e-5)


def test_feedback_only_applies_to_short_queries(lexical: LexicalIndex) -> None:
    vector = [0.1, 0.0, 0.6, 0.3, 0.7]
    long_query = "how long is the incubation period"
    plain = feedback_rank(long_query, vector, lexical, feedback_weight=0.0)
    assert feedback_rank(long_query, vector, lexical, feedback_weight=0.5, feedback_max_words=5) == plain
    assert feedback_rank(long_query, vector, lexical, feedback_weight=0.5, feedback_max_words=6) != plain


def test_feedback_is_skipped_without_lexical_matches_or_stored_vectors(lexical: LexicalIndex) -> None:
    vector = [0.1, 0.0, 0.6, 0.3, 0.7]
    assert feedback_rank("zzz", vector, lexical, feedback_weight=0.5) == feedback_rank("zzz", vector, lexical)
    with_feedback = feedback_rank("incubation", vector, lexical, feedback_weight=0.5)
    assert with_feedback != feedback_rank("incubation", vector, lexical, feedback_weight=0.0)
    assert rank("incubation", vector, lexical, feedback_weight=0.5) == rank("incubation", vector, lexical)


def test_feedback_does_not_decide_the_cut_off(lexical: LexicalIndex) -> None:
    # Cosine 0.25 with text 13 misses a 0.3 cut-off; moved towards 13 it would reach 0.61, but
    # whether anything is worth showing is decided on the typed query alone.
    vector = [0.0, 0.0, 0.0, 0.25, 0.97]
    assert feedback_rank("incubation", vector, lexical, min_score=0.3, feedback_weight=0.5) == {}
    assert feedback_rank("incubation", vector, lexical, min_score=0.2, feedback_weight=0.5)[13] > 0.6
