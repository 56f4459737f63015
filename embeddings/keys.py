"""Extra wordings of a pair ("keys"): a pair scores by its best key as well as by its question.

Keys are the settled queries visitors chose a pair for, or wordings imported from a file. They are
searched beside the question index, exactly (a matrix product over a few hundred to thousands of
rows), and their best score per pair is merged into the candidates before the blend, so the
ranking's cut-off still decides alone whether anything is shown.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .lexical import LexicalIndex
from .typed_query import TypedQuery

# A key's words count for this share of a question's: keys are visitors' words, which often share
# a topic's common words with other pairs' questions, so at full weight they pull wrong pairs up
# for complete queries (docs/quality.md, "Keys").
KEY_LEXICAL_WEIGHT = 0.5


class KeyIndex:
    """Key texts with their vectors, each mapped to the pair it stands for."""

    def __init__(
        self,
        pair_ids: Sequence[int],
        texts: Sequence[str],
        vectors: npt.NDArray[np.floating],
        *,
        lexical_ids: npt.NDArray[np.int64],
        lexical_weight: float = KEY_LEXICAL_WEIGHT,
    ) -> None:
        """`lexical_ids` are the question index's ids in its order; keys of pairs not in it are dropped."""
        position = {int(pk): row for row, pk in enumerate(lexical_ids)}
        # Kept keys sorted by pair, so a pair's best key is one `reduceat` over its run of keys.
        kept = sorted((row for row, pk in enumerate(pair_ids) if int(pk) in position), key=lambda r: int(pair_ids[r]))
        self.texts = [texts[row] for row in kept]
        self.pair_ids = np.asarray([int(pair_ids[row]) for row in kept], dtype=np.int64)
        matrix = np.asarray(vectors, dtype=np.float32)
        self.vectors = np.ascontiguousarray(matrix[kept]) if kept else np.zeros((0, matrix.shape[-1]), np.float32)
        self.pairs, self._starts = np.unique(self.pair_ids, return_index=True)
        # Where each pair sits in the question index's score array.
        self.rows = np.asarray([position[int(pk)] for pk in self.pairs], dtype=np.int64)
        self._pair_position = {int(pk): p for p, pk in enumerate(self.pairs)}
        self.lexical = LexicalIndex(list(range(len(kept))), self.texts)
        self.lexical_weight = np.float32(lexical_weight)

    def __len__(self) -> int:
        return len(self.texts)

    def best_cosines(self, vector: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Per pair of `self.pairs`, the best cosine of the query with any of its keys."""
        if not len(self):
            return np.zeros(0, dtype=np.float32)
        cosines = self.vectors @ np.asarray(vector, dtype=np.float32).reshape(-1)
        best: npt.NDArray[np.float32] = np.maximum.reduceat(cosines, self._starts)
        return best

    def merge_nearest(
        self, nearest: Sequence[tuple[int, float]], best: npt.NDArray[np.float32], *, limit: int
    ) -> list[tuple[int, float]]:
        """The question index's nearest, each pair at its best of question and keys, with the keys' best added."""
        merged = dict(nearest)
        top = np.argpartition(-best, limit)[:limit] if len(best) > limit else np.arange(len(best))
        for p in top:
            pk, cosine = int(self.pairs[p]), float(best[p])
            if cosine > merged.get(pk, -1.0):
                merged[pk] = cosine
        return sorted(merged.items(), key=lambda item: -item[1])

    def raise_similarities(
        self, ids: Sequence[int], cosines: npt.NDArray[np.floating], best: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.float32]:
        """`cosines` of `ids` (with their questions) raised to their keys' best where that is higher."""
        out = np.asarray(cosines, dtype=np.float32).reshape(-1).copy()
        for row, pk in enumerate(ids):
            p = self._pair_position.get(int(pk))
            if p is not None and best[p] > out[row]:
                out[row] = best[p]
        return out

    def raise_lexical(self, scores: npt.NDArray[np.float32], query: TypedQuery) -> npt.NDArray[np.float32]:
        """A question index's `scores_all` result with each pair raised to its best key's weighted lexical score."""
        if not len(self):
            return scores
        best = np.maximum.reduceat(self.lexical.scores_all(query), self._starts) * self.lexical_weight
        raised = scores.copy()
        raised[self.rows] = np.maximum(raised[self.rows], best)
        return raised
