"""Blend semantic similarity with prefix-aware lexical matching into one comparable score.

The vector index finds texts that mean the same as a finished query; the lexical index finds texts
containing the words typed so far, including the one still being typed. Each candidate from either
source gets both scores, blended linearly so the result stays in [0, 1] and one threshold
(`RankingParams.min_score`) can say "no good suggestion" for every query alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .lexical import LexicalIndex
from .typed_query import TypedQuery


@dataclass(frozen=True)
class RankingParams:
    """Every tunable of the hybrid ranking; defaults were tuned on dev splits only."""

    # How many nearest neighbours the caller fetches from the vector index.
    semantic_candidates: int = 50
    # How many best lexical matches join them (their cosine comes from `similarity`).
    lexical_candidates: int = 10
    # Share of the lexical score in the blend.
    lexical_share: float = 0.3
    # Below this many typed words the query says too little for either signal alone; the lexical
    # share moves by `short_query_shift` (positive: more lexical) per missing word.
    short_query_words: int = 5
    short_query_shift: float = 0.1
    # Blended score under which a candidate is not worth showing: gibberish and off-topic input
    # then yields no suggestions instead of the least bad random ones.
    min_score: float = 0.2
    # Once the best candidate clears `min_score`, the others need only this: the query is then
    # known to be answerable, and a weaker runner-up may still be the one meant.
    follow_score: float = 0.1
    # While the last word is unfinished, the query is embedded with that word completed to the
    # corpus word it most often stands for ("how do i reset my pas" -> "... password"), once at
    # least this many characters of it are typed (0 = never): a half word embeds as noise. Before
    # that, the words typed before it are embedded without it (when there are any).
    complete_min_chars: int = 2
    # Pseudo-relevance feedback (Rocchio) without another encoder call: while the query has at
    # most `feedback_max_words` words, every candidate is rescored against the query vector moved
    # towards the stored vectors of the `feedback_docs` best lexical matches,
    # q' = normalise(q + feedback_weight * mean(their vectors)). A short prefix embeds vaguely;
    # the texts its words pick out say what such a query is usually about (0 = off).
    feedback_weight: float = 0.2
    feedback_docs: int = 1
    feedback_max_words: int = 5


DEFAULT = RankingParams()

Similarity = Callable[[Sequence[int]], npt.NDArray[np.floating]]
Vectors = Callable[[Sequence[int]], npt.NDArray[np.floating]]


def lexical_share(query: str | TypedQuery, params: RankingParams = DEFAULT) -> float:
    """Return the lexical share of the blend for `query`, clipped to [0, 1]."""
    missing = max(0, params.short_query_words - len(TypedQuery.of(query).words))
    return min(1.0, max(0.0, params.lexical_share + missing * params.short_query_shift))


def embedding_text(query: str | TypedQuery, lexical: LexicalIndex, params: RankingParams = DEFAULT) -> str:
    """Return the text to embed for `query`: its unfinished last word completed when possible.

    Costs no extra encoder call: the completed text is embedded instead of the typed one.
    """
    query = TypedQuery.of(query)
    if params.complete_min_chars <= 0 or not query.ends_inside_word or len(query.last_word) != 1:
        return query.text
    typed = query.last_word[0]
    before = query.before_last_word
    if len(typed) < params.complete_min_chars:
        # Too short to complete ("how do i r"): embed the words before it, which an earlier
        # keystroke embedded already (a cache hit); the lexical side still matches the letter.
        return before if before.strip() else query.text
    completed = lexical.complete(typed)
    return query.text if completed is None else before + completed


def hybrid_rank(
    query: str | TypedQuery,
    *,
    semantic: Sequence[tuple[int, float]],
    similarity: Similarity,
    lexical: LexicalIndex,
    k: int,
    params: RankingParams = DEFAULT,
    vectors: Vectors | None = None,
    allowed: npt.NDArray[np.bool_] | None = None,
    lexical_scores: npt.NDArray[np.float32] | None = None,
) -> list[tuple[int, float]]:
    """Return the top `k` (id, blended score) for `query`, best first, above `params.min_score`.

    `semantic` holds the vector index's nearest (id, cosine) pairs; `similarity(ids)` returns the
    query's cosine with any corpus ids, so lexical-only candidates are scored on both signals.
    `vectors(ids)` returns stored unit vectors, for pseudo-relevance feedback (skipped without it).
    `allowed` (per text, in the lexical index's order) keeps lexical candidates to a filter's texts;
    `semantic` must then hold only such texts too.
    `lexical_scores`, when given, replaces `lexical.scores_all(query)` (raised by a pair's keys).
    """
    query = TypedQuery.of(query)
    lexical_all = lexical.scores_all(query) if lexical_scores is None else lexical_scores
    if allowed is not None:
        lexical_all *= allowed
    # One selection serves both the extra candidates and the feedback texts (a pass over every
    # text's score each, per keystroke).
    best_lexical = lexical.top(lexical_all, limit=max(params.lexical_candidates, params.feedback_docs))
    ids = [i for i, _ in semantic]
    cosines = [c for _, c in semantic]
    seen = set(ids)
    extra = [i for i, _ in best_lexical[: params.lexical_candidates] if i not in seen]
    if extra:
        ids += extra
        cosines += [float(c) for c in np.asarray(similarity(extra)).ravel()]
    if not ids:
        return []
    weight = lexical_share(query, params)
    lexical_scores = lexical.scores_at(lexical_all, ids)
    blended = _blend(cosines, lexical_scores, weight)
    if float(blended.max()) < params.min_score:
        return []
    if vectors is not None and _feedback_applies(query, params):
        # Decided on the typed query alone, above: the moved vector leans towards a corpus text
        # by construction, so it would make off-topic input look answerable.
        top = [i for i, score in best_lexical[: params.feedback_docs] if score > 0]
        if top:
            moved = _feedback_cosines(ids, cosines, top, similarity=similarity, vectors=vectors, params=params)
            blended = _blend(moved, lexical_scores, weight)
    return _top_distinct(ids, blended, lexical=lexical, k=k, min_score=min(params.min_score, params.follow_score))


def _blend(cosines: Sequence[float], lexical_scores: npt.NDArray[np.float32], weight: float) -> npt.NDArray[np.float32]:
    # Cosines below zero mean "unrelated" just as zero does; clipping keeps the blend in [0, 1].
    cos = np.clip(np.asarray(cosines, dtype=np.float32), 0.0, 1.0)
    return (1.0 - weight) * cos + weight * lexical_scores


def _feedback_applies(query: TypedQuery, params: RankingParams) -> bool:
    return params.feedback_weight > 0 and params.feedback_docs > 0 and len(query.words) <= params.feedback_max_words


def _feedback_cosines(
    ids: Sequence[int],
    cosines: Sequence[float],
    feedback: Sequence[int],
    *,
    similarity: Similarity,
    vectors: Vectors,
    params: RankingParams,
) -> list[float]:
    """Cosines of the candidates with the query vector moved towards `feedback`'s vectors.

    q' = (q + beta * c) / |q + beta * c| with c the feedback texts' mean vector, so
    q'.x = (q.x + beta * c.x) / sqrt(1 + 2 * beta * q.c + beta^2 * c.c): the query vector itself
    is never needed, only its cosines.
    """
    beta = params.feedback_weight
    centroid = np.asarray(vectors(feedback), dtype=np.float32).mean(axis=0)
    q_dot_c = float(np.mean(similarity(feedback)))
    norm = float(np.sqrt(max(1.0 + 2.0 * beta * q_dot_c + beta * beta * float(centroid @ centroid), 1e-12)))
    toward = np.asarray(vectors(ids), dtype=np.float32) @ centroid
    moved: list[float] = ((np.asarray(cosines, dtype=np.float32) + beta * toward) / norm).tolist()
    return moved


def semantic_rank(
    semantic: Sequence[tuple[int, float]], *, k: int, lexical: LexicalIndex | None = None
) -> list[tuple[int, float]]:
    """Return the top `k` (id, cosine) by cosine alone, with no cut-off: the baseline.

    With `lexical`, texts with the same words are shown once, as `hybrid_rank` does.
    """
    if not semantic:
        return []
    ids = [i for i, _ in semantic]
    scores = np.asarray([c for _, c in semantic], dtype=np.float64)
    if lexical is None:
        order = np.lexsort((np.arange(len(ids)), -scores))[:k]
        return [(ids[p], float(scores[p])) for p in order]
    return _top_distinct(ids, scores, lexical=lexical, k=k, min_score=-np.inf)


def _top_distinct(
    ids: Sequence[int],
    scores: npt.NDArray[np.floating],
    *,
    lexical: LexicalIndex,
    k: int,
    min_score: float,
) -> list[tuple[int, float]]:
    # Ties keep candidate order (semantic first), so the same input always ranks the same way.
    order = np.lexsort((np.arange(len(ids)), -scores))
    groups = lexical.duplicate_group([ids[p] for p in order])
    out: list[tuple[int, float]] = []
    shown: set[int] = set()
    for p, group in zip(order, groups.tolist(), strict=True):
        if len(out) == k or scores[p] < min_score:
            break
        # Corpora repeat question texts (templated FAQs); a repeat adds nothing for the user.
        if group not in shown:
            shown.add(group)
            out.append((ids[p], float(scores[p])))
    return out
