"""Group search queries by meaning: content gaps as a handful of topics rather than a long list.

The number of groups comes from the data, not from the caller: queries are first cut into at most
`max_seeds` tight clusters (faiss k-means, only when there are more queries than that), and clusters
are then merged while the mean cosine between their queries (average linkage, each query counted as
often as it was searched) stays above `similarity`. Paraphrases of one question end up together;
a query like no other stays a group of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .vector_index import VectorIndex, spherical_kmeans

DEFAULT_SIMILARITY = 0.45
DEFAULT_MAX_SEEDS = 1024
DEFAULT_EXAMPLES = 5


@dataclass(frozen=True)
class QueryGroup:
    """One group of queries with the same meaning."""

    size: int  # searches: the sum of the members' counts
    wordings: int  # distinct queries in the group
    typical: str  # the wording closest to the group's mean meaning
    examples: tuple[str, ...]  # the most searched wordings, most searched first
    members: tuple[str, ...]  # every wording, most searched first
    nearest_id: int | None  # the closest question in the corpus index, if one was given
    nearest_cosine: float | None


def group_queries(
    texts: Sequence[str],
    counts: Sequence[int],
    vectors: np.ndarray,
    *,
    index: VectorIndex | None = None,
    similarity: float = DEFAULT_SIMILARITY,
    max_seeds: int = DEFAULT_MAX_SEEDS,
    examples: int = DEFAULT_EXAMPLES,
) -> list[QueryGroup]:
    """Distinct queries (with how often each was searched and their unit vectors) grouped by meaning,
    largest group first."""
    if not len(texts) == len(counts) == len(vectors):
        raise ValueError(f"{len(texts)} texts, {len(counts)} counts and {len(vectors)} vectors: one of each per query.")
    if any(count < 1 for count in counts):
        raise ValueError("Every query's count must be at least 1.")
    if not len(texts):
        return []
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    weights = np.asarray(counts, dtype=np.float64)
    labels = _seed_labels(matrix, weights, max_seeds)
    labels = _merge(matrix, weights, labels, similarity)
    # One reassignment to the merged means: a query that k-means put with the wrong seed moves back.
    means = _means(matrix, weights, labels)
    labels = np.argmax(matrix @ means.T, axis=1)
    means = _means(matrix, weights, labels)
    groups = [
        _group(texts, weights, matrix, np.flatnonzero(labels == label), means[label], index=index, examples=examples)
        for label in np.unique(labels)
    ]
    return sorted(groups, key=lambda group: (-group.size, group.typical))


def _seed_labels(matrix: np.ndarray, weights: np.ndarray, max_seeds: int) -> np.ndarray:
    """Each query's first cluster: itself when there are few, else its nearest k-means centroid."""
    if len(matrix) <= max_seeds:
        return np.arange(len(matrix))
    centroids = spherical_kmeans(matrix, max_seeds, weights=weights)
    return np.asarray(np.argmax(matrix @ centroids.T, axis=1))


def _merge(matrix: np.ndarray, weights: np.ndarray, labels: np.ndarray, similarity: float) -> np.ndarray:
    """Merge clusters, closest pair first, while their average-linkage cosine is at least `similarity`."""
    seeds = np.unique(labels)
    labels = np.searchsorted(seeds, labels)
    # For unit vectors the mean cosine between two clusters' members is the dot product of their
    # weighted mean vectors, so a merge only needs the merged cluster's new mean.
    sums = np.zeros((len(seeds), matrix.shape[1]))
    np.add.at(sums, labels, matrix * weights[:, None])
    mass = np.bincount(labels, weights=weights, minlength=len(seeds))
    means = sums / mass[:, None]
    linkage = means @ means.T
    np.fill_diagonal(linkage, -np.inf)
    owner = np.arange(len(seeds))
    alive = np.ones(len(seeds), dtype=bool)
    for _ in range(len(seeds) - 1):
        a, b = np.unravel_index(int(np.argmax(linkage)), linkage.shape)
        if linkage[a, b] < similarity:
            break
        sums[a] += sums[b]
        mass[a] += mass[b]
        means[a] = sums[a] / mass[a]
        owner[owner == b] = a
        alive[b] = False
        row = np.where(alive, means @ means[a], -np.inf)
        row[a] = -np.inf
        linkage[a, :] = linkage[:, a] = row
        linkage[b, :] = linkage[:, b] = -np.inf
    return np.asarray(owner[labels])


def _means(matrix: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit mean vector of each label's members (a zero row for a label with none)."""
    count = int(labels.max()) + 1
    sums = np.zeros((count, matrix.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, matrix * weights[:, None])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.where(norms > 0, norms, 1)).astype(np.float32)


def _group(
    texts: Sequence[str],
    weights: np.ndarray,
    matrix: np.ndarray,
    rows: np.ndarray,
    mean: np.ndarray,
    *,
    index: VectorIndex | None,
    examples: int,
) -> QueryGroup:
    rows_list = [int(row) for row in rows]
    closeness = matrix[rows] @ mean
    by_count = sorted(range(len(rows)), key=lambda i: (-weights[rows[i]], -closeness[i], texts[rows_list[i]]))
    # Ties on closeness (two wordings with one vector) go to the more searched one.
    typical = max(range(len(rows)), key=lambda i: (round(float(closeness[i]), 5), weights[rows[i]]))
    members = tuple(texts[rows_list[i]] for i in by_count)
    nearest = index.search(mean, 1) if index is not None else []
    return QueryGroup(
        size=int(weights[rows].sum()),
        wordings=len(rows),
        typical=texts[rows_list[typical]],
        examples=members[:examples],
        members=members,
        nearest_id=nearest[0][0] if nearest else None,
        nearest_cosine=round(nearest[0][1], 4) if nearest else None,
    )
