"""Prefix-aware lexical matching for as-you-type suggestions.

Semantic embeddings of a half-typed query are noisy: the unfinished last word carries little meaning.
This index scores corpus texts by the IDF mass of the query words they contain, where the last word,
while still being typed, matches every vocabulary word it begins, earlier words match whole words
(with a one-edit typo tolerance for longer words), and scores are normalised to [0, 1] per query so
that a threshold means the same thing for every query.

Pure Python + numpy: postings live in one CSR array pair so a query costs a few fancy-index updates.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .plain_arrays import (
    checked_array,
    csr_pointers,
    csr_values,
    flatten_groups,
    pack_strings,
    unflatten_groups,
    unpack_strings,
)
from .synonyms import NO_SYNONYMS, SynonymMap
from .typed_query import TypedQuery, tokenize

# Resolution of the score histogram used to select the best matches (see LexicalIndex.top).
_BINS = 1024
# Words in at least this share of the texts (and at least _DENSE_MIN_DF of them) also get a dense
# 0/1 column: one pass over a column is far cheaper than crediting tens of thousands of scattered
# texts, and such words ("how", "do", "the") are in nearly every query.
_DENSE_MIN_SHARE = 1 / 16
_DENSE_MIN_DF = 1024


@dataclass(frozen=True)
class LexicalParams:
    """Tunables of lexical matching; defaults were tuned on dev splits only."""

    # A one-edit match counts for this share of the word's weight: likely but not certainly meant.
    typo_weight: float = 0.8
    # Shorter words have too many one-edit neighbours ("cat" -> "bat", "car", "cut") to be safe.
    typo_min_length: int = 5
    # A short prefix ("w") begins thousands of words; keep the most frequent ones, which are also
    # the likeliest completions, so the cost per keystroke stays bounded.
    max_expansions: int = 64
    # Inflected forms ("masks" for "mask", "tested" for "test") count for this share of a word.
    inflection_weight: float = 0.9
    # Long texts contain many words by chance; their scores shrink with length as in BM25
    # (0 = no length penalty). Texts of average length or shorter are never boosted above 1.
    length_penalty: float = 0.0


_NO_TERMS = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class _Word:
    """How one query word matches: (terms, credit per matching text) weakest first, and the
    word's share of the query mass (what a perfect match would earn)."""

    matches: tuple[tuple[npt.NDArray[np.int64], float], ...]
    mass: float


class LexicalIndex:
    """In-memory inverted index over short texts with prefix and typo-tolerant matching."""

    def __init__(
        self,
        ids: Sequence[int],
        texts: Sequence[str],
        *,
        params: LexicalParams | None = None,
        synonyms: SynonymMap = NO_SYNONYMS,
    ) -> None:
        """Index `texts`, each identified by the matching entry of `ids`, with the words `synonyms` add."""
        if len(ids) != len(texts):
            raise ValueError(f"ids and texts differ in length ({len(ids)} != {len(texts)})")
        self.params = params or LexicalParams()
        self._ids = np.asarray(ids, dtype=np.int64)
        self._position = {int(i): p for p, i in enumerate(self._ids)}
        if len(self._position) != len(self._ids):
            raise ValueError("ids must be unique")
        tokens = [tokenize(t) for t in texts]
        docs = [sorted(set(synonyms.expand(words))) for words in tokens]
        self._build_postings(docs)
        self._build_dense_columns()
        self._build_length_factors([len(words) for words in tokens])
        self._build_typo_keys()
        self._build_duplicate_groups(texts)

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> npt.NDArray[np.int64]:
        """The indexed ids, in index order (the order of `scores_all`)."""
        return self._ids

    @property
    def dense_word_count(self) -> int:
        """How many frequent words are also kept as dense 0/1 columns."""
        return int(self._dense.shape[0])

    # -- storing ----------------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        """The index as plain numeric arrays (no objects), from which `from_arrays` rebuilds it exactly."""
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "ids": self._ids,
            "vocabulary": pack_strings(self.vocabulary),
            "ptr": self._ptr,
            "docs": self._docs,
            "df": self._df,
            "idf": self._idf,
            "unknown_idf": np.asarray(self._unknown_idf, dtype=np.float64),
            "dense_row": self._dense_row,
            "dense": self._dense,
            "group": self._group,
            **flatten_groups(
                "typo", {key: np.asarray(terms, dtype=np.int64) for key, terms in self._typo_keys.items()}
            ),
            **flatten_groups("stem", self._stems),
        }
        if self._length_factor is not None:
            arrays["length_factor"] = self._length_factor
        for field in dataclasses.fields(LexicalParams):
            arrays[f"param_{field.name}"] = np.asarray(getattr(self.params, field.name))
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.NDArray[np.generic]]) -> LexicalIndex:
        """The index `to_arrays` described; ValueError or KeyError when the arrays do not fit together."""
        index = cls.__new__(cls)
        index.params = LexicalParams(
            **{
                f.name: checked_array(arrays, f"param_{f.name}", type(f.default), 0).item()
                for f in dataclasses.fields(LexicalParams)
            }
        )
        n = len(ids := checked_array(arrays, "ids", np.int64, 1))
        index._ids = ids
        # Lookups are rebuilt rather than stored: they follow from the arrays, and a file holds no objects.
        index._position = dict(zip(ids.tolist(), range(n), strict=True))
        if len(index._position) != n:
            raise ValueError("ids must be unique")
        index._ptr = csr_pointers(arrays, "ptr")
        terms = len(index._ptr) - 1
        index.vocabulary = unpack_strings(checked_array(arrays, "vocabulary", np.uint8, 1), terms)
        index._term = dict(zip(index.vocabulary, range(terms), strict=True))
        index._docs = csr_values(arrays, "docs", np.int32, index._ptr, bound=n)
        index._df = checked_array(arrays, "df", np.int64, 1, size=terms)
        index._idf = checked_array(arrays, "idf", np.float64, 1, size=terms)
        index._unknown_idf = float(checked_array(arrays, "unknown_idf", np.float64, 0))
        index._dense_row = checked_array(arrays, "dense_row", np.int32, 1, size=terms)
        index._dense = checked_array(arrays, "dense", np.uint8, 2)
        if index._dense.shape[1] != n or index._dense_row.max(initial=-1) >= len(index._dense):
            raise ValueError("stored dense columns do not fit the index")
        index._group = checked_array(arrays, "group", np.int64, 1, size=n)
        index._length_factor = (
            checked_array(arrays, "length_factor", np.float32, 1, size=n) if "length_factor" in arrays else None
        )
        keys, bounds, values = unflatten_groups(arrays, "typo", bound=terms)
        typo_terms = values.tolist()
        index._typo_keys = {key: typo_terms[a:b] for key, a, b in zip(keys, bounds, bounds[1:], strict=False)}
        keys, bounds, values = unflatten_groups(arrays, "stem", bound=terms)
        index._stems = {key: values[a:b] for key, a, b in zip(keys, bounds, bounds[1:], strict=False)}
        return index

    # -- building ---------------------------------------------------------------------------------

    def _build_postings(self, docs: list[list[str]]) -> None:
        self.vocabulary: list[str] = sorted({w for words in docs for w in words})
        self._term = {w: t for t, w in enumerate(self.vocabulary)}
        pairs = [(self._term[w], d) for d, words in enumerate(docs) for w in words]
        arr = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        arr = arr[np.lexsort((arr[:, 1], arr[:, 0]))]
        df = np.bincount(arr[:, 0], minlength=len(self.vocabulary))
        self._ptr = np.concatenate(([0], np.cumsum(df))).astype(np.int64)
        self._docs = arr[:, 1].astype(np.int32)
        self._df = df.astype(np.int64)
        n = max(len(docs), 1)
        # Smoothed IDF stays positive even for a word in every text, so every match counts a little.
        self._idf = np.log1p(n / np.maximum(df, 1)).astype(np.float64)
        self._unknown_idf = math.log1p(n)

    def _build_dense_columns(self) -> None:
        threshold = max(_DENSE_MIN_DF, math.ceil(len(self._ids) * _DENSE_MIN_SHARE))
        frequent = np.flatnonzero(self._df >= threshold)
        self._dense_row = np.full(len(self.vocabulary), -1, dtype=np.int32)
        self._dense_row[frequent] = np.arange(len(frequent), dtype=np.int32)
        self._dense = np.zeros((len(frequent), len(self._ids)), dtype=np.uint8)
        for row, term in enumerate(frequent):
            self._dense[row, self._docs[self._ptr[term] : self._ptr[term + 1]]] = 1

    def _build_length_factors(self, lengths: list[int]) -> None:
        # BM25's length normalisation for a word seen once (k1 = 1.2), capped at 1 so that scores
        # stay in [0, 1]: a match in a long text is more likely to be incidental.
        length = np.maximum(np.asarray(lengths, dtype=np.float64), 1.0)
        b, k1 = self.params.length_penalty, 1.2
        relative = length / max(float(length.mean()), 1.0) if length.size else length
        factor = (k1 + 1) / (k1 * (1 - b + b * relative) + 1)
        # None when no text is penalised (b = 0): skips a pass over every score per keystroke.
        self._length_factor: npt.NDArray[np.float32] | None = (
            np.minimum(factor, 1.0).astype(np.float32) if b > 0 else None
        )

    def _build_typo_keys(self) -> None:
        # Deletion neighbourhood (SymSpell): two words within one edit share a one-deletion key.
        keys: dict[str, list[int]] = {}
        for term, word in enumerate(self.vocabulary):
            if len(word) >= self.params.typo_min_length - 1:
                for key in _deletions(word):
                    keys.setdefault(key, []).append(term)
        self._typo_keys = keys
        stems: dict[str, list[int]] = {}
        for term, word in enumerate(self.vocabulary):
            stems.setdefault(_stem(word), []).append(term)
        self._stems = {stem: np.array(terms, dtype=np.int64) for stem, terms in stems.items()}

    def _build_duplicate_groups(self, texts: Sequence[str]) -> None:
        # Texts equal up to case, accents and punctuation share a group so callers can show one.
        first: dict[tuple[str, ...], int] = {}
        self._group = np.array([first.setdefault(tuple(tokenize(t)), p) for p, t in enumerate(texts)], dtype=np.int64)

    # -- querying ---------------------------------------------------------------------------------

    def scores_all(self, query: str | TypedQuery) -> npt.NDArray[np.float32]:
        """Score every indexed text against `query`, in index order, each in [0, 1]."""
        acc = np.zeros(len(self._ids), dtype=np.float32)
        mass = 0.0
        for word in self._query_terms(TypedQuery.of(query)):
            mass += word.mass
            if len(word.matches) == 1:
                terms, credit = word.matches[0]
                dense = self._dense_row[terms]
                if (dense < 0).all():
                    # Fancy-index `+=` writes each text once even when it is listed twice, so a
                    # text holding several expansions of the word is credited once: a union.
                    acc[self._postings(terms)] += credit
                else:
                    acc += self._holds_any(terms, dense) * np.float32(credit)
            elif word.matches:
                acc += self._best_credit(word.matches, len(acc))
        if mass > 0:
            if self._length_factor is None:
                acc *= 1.0 / mass
            else:
                acc *= self._length_factor / mass
        return acc

    def scores_for(self, query: str | TypedQuery, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Return the score of each of `ids` (0 for ids not indexed) against `query`."""
        return self.scores_at(self.scores_all(query), ids)

    def scores_at(self, scores: npt.NDArray[np.float32], ids: Sequence[int]) -> npt.NDArray[np.float32]:
        """Pick the entries of a `scores_all` result for `ids`; unknown ids score 0."""
        positions = np.array([self._position.get(int(i), -1) for i in ids], dtype=np.int64)
        out = np.zeros(len(positions), dtype=np.float32)
        known = positions >= 0
        out[known] = scores[positions[known]]
        return out

    def search(self, query: str | TypedQuery, *, limit: int) -> list[tuple[int, float]]:
        """Return up to `limit` (id, score) pairs with a positive score, best first."""
        return self.top(self.scores_all(query), limit=limit)

    def top(self, scores: npt.NDArray[np.float32], *, limit: int) -> list[tuple[int, float]]:
        """Return the best `limit` (id, score) pairs of a `scores_all` result, best first."""
        if limit <= 0 or scores.size == 0:
            return []
        # Lexical scores take few distinct values, so tens of thousands of texts can tie, and a
        # selection algorithm (argpartition) degrades on ties. A histogram of scores rounded up to
        # 1/_BINS finds the lowest bin that still belongs in the top `limit` in two linear passes.
        # It runs on the texts scoring over half the best score when they are enough: usually a
        # small share of the corpus.
        best = float(scores.max())
        if best <= 0.0:
            return []
        half = int(best * _BINS / 2)
        if half > 0:
            # s > half / _BINS exactly when s rounds up to a bin above `half`: whole bins, so if
            # they hold `limit` texts the cut falls among them and the result is the same.
            shortlist = np.flatnonzero(scores > half / _BINS)
            if shortlist.size >= limit:
                bins = np.minimum(np.ceil(scores[shortlist] * _BINS), _BINS).astype(np.int32)
                return self._top_of(scores, shortlist, bins, limit)
        bins = np.clip(np.ceil(scores * _BINS), 0, _BINS).astype(np.int32)
        return self._top_of(scores, np.arange(scores.size), bins, limit)

    def _top_of(
        self,
        scores: npt.NDArray[np.float32],
        positions: npt.NDArray[np.int64],
        bins: npt.NDArray[np.int32],
        limit: int,
    ) -> list[tuple[int, float]]:
        """The histogram selection over `positions` (ascending) whose rounded scores are `bins`."""
        counts = np.bincount(bins, minlength=_BINS + 1)[1:]
        above = np.cumsum(counts[::-1])
        cut = _BINS - int(np.searchsorted(above, limit)) if above[-1] > limit else 1
        chosen = np.flatnonzero(bins >= cut)
        if chosen.size > limit:
            # Within the last bin, earlier texts win: rounding ties are broken by index order.
            clear = chosen[bins[chosen] > cut]
            chosen = np.concatenate((clear, chosen[bins[chosen] == cut][: limit - clear.size]))
        hits = positions[chosen]
        # Stable sort on (-score, position) keeps exact ties in index order: repeatable results.
        hits = hits[np.lexsort((hits, -scores[hits]))]
        return [(int(self._ids[p]), float(scores[p])) for p in hits]

    def complete(self, prefix: str) -> str | None:
        """Return the indexed word beginning with normalised `prefix` that most texts contain.

        Ties go to the alphabetically first word; None when no word begins so.
        """
        lo, hi = self._completions(prefix)
        if not prefix or lo == hi:
            return None
        # argmax keeps the first maximum; the vocabulary is sorted, so a prefix sorts before its
        # extensions and an exact word wins a tie with its longer forms.
        return self.vocabulary[lo + int(np.argmax(self._df[lo:hi]))]

    def duplicate_group(self, ids: Sequence[int]) -> npt.NDArray[np.int64]:
        """Return a key per id that is equal for texts with the same words (-1 if not indexed)."""
        positions = np.array([self._position.get(int(i), -1) for i in ids], dtype=np.int64)
        return np.where(positions >= 0, self._group[positions], -1 - np.arange(len(positions)))

    # -- internals --------------------------------------------------------------------------------

    def _best_credit(
        self, matches: tuple[tuple[npt.NDArray[np.int64], float], ...], size: int
    ) -> npt.NDArray[np.float32]:
        # Readings are written weakest first (matches are ordered so), so a text holding both
        # an inflection and the exact word keeps the exact word's credit.
        credit = np.zeros(size, dtype=np.float32)
        for terms, weight in matches:
            dense = self._dense_row[terms]
            if (dense < 0).all():
                credit[self._postings(terms)] = weight
            else:
                np.maximum(credit, self._holds_any(terms, dense) * np.float32(weight), out=credit)
        return credit

    def _holds_any(self, terms: npt.NDArray[np.int64], dense: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
        """A 0/1 column: which texts contain at least one of `terms` (`dense` = their dense rows)."""
        rows = dense[dense >= 0]
        sparse = terms[dense < 0]
        if rows.size == 1 and not sparse.size:
            column: npt.NDArray[np.uint8] = self._dense[rows[0]]
            return column
        holds: npt.NDArray[np.uint8] = (
            self._dense[rows[0]].copy() if rows.size == 1 else np.bitwise_or.reduce(self._dense[rows], axis=0)
        )
        if sparse.size:
            holds[self._postings(sparse)] = 1
        return holds

    def _postings(self, terms: npt.NDArray[np.int64]) -> npt.NDArray[np.int32]:
        if terms.size == 1:
            t = int(terms[0])
            return self._docs[self._ptr[t] : self._ptr[t + 1]]
        return np.concatenate([self._docs[self._ptr[t] : self._ptr[t + 1]] for t in terms])

    def _query_terms(self, query: TypedQuery) -> Iterator[_Word]:
        """Yield how each distinct query word matches the vocabulary."""
        for word in dict.fromkeys(query.finished_words):
            yield self._whole_word(word)
        if query.unfinished_word is not None:
            yield self._prefix(query.unfinished_word)

    def _whole_word(self, token: str) -> _Word:
        term = self._term.get(token)
        family = self._stems.get(_stem(token), _NO_TERMS)
        inflection = self.params.inflection_weight
        if term is not None:
            idf = float(self._idf[term])
            exact = (np.array([term], dtype=np.int64), idf)
            others = family[family != term] if inflection > 0 else _NO_TERMS
            return _Word(((others, idf * inflection), exact) if others.size else (exact,), idf)
        if family.size and inflection > 0:
            # An unseen inflection of a known word ("protecting" when only "protect" occurs).
            return self._reading(family, inflection)
        near = self._typo_neighbours(token)
        if near.size and self.params.typo_weight > 0:
            return self._reading(near, self.params.typo_weight)
        # Query words absent from the corpus still count in the query's mass: a query about something
        # the corpus never mentions should not score as a perfect match on its other words.
        return _Word((), self._unknown_idf)

    def _reading(self, terms: npt.NDArray[np.int64], weight: float) -> _Word:
        # Weigh an uncertain reading by its most common word, the likeliest one meant.
        idf = float(self._idf[terms[np.argmax(self._df[terms])]])
        return _Word(((terms, idf * weight),), idf)

    def _completions(self, prefix: str) -> tuple[int, int]:
        """The range [lo, hi) of vocabulary terms that begin with `prefix` (sorted vocabulary)."""
        lo = bisect.bisect_left(self.vocabulary, prefix)
        return lo, bisect.bisect_left(self.vocabulary, prefix + "\U0010ffff", lo)

    def _prefix(self, prefix: str) -> _Word:
        lo, hi = self._completions(prefix)
        if lo == hi:
            # Nothing begins this way: it may be a typo of a finished word, or not a word at all.
            return self._whole_word(prefix)
        terms = np.arange(lo, hi, dtype=np.int64)
        if terms.size > self.params.max_expansions:
            cap = self.params.max_expansions
            terms = terms[np.argpartition(-self._df[terms], cap - 1)[:cap]]
        # One IDF for the whole prefix, from how many texts contain any completion (bounded by the
        # corpus size): every completion is an equally valid reading of what is typed so far.
        df = min(int(self._df[terms].sum()), len(self._ids))
        idf = math.log1p(len(self._ids) / max(df, 1))
        return _Word(((terms, idf),), idf)

    def _typo_neighbours(self, token: str) -> npt.NDArray[np.int64]:
        if len(token) < self.params.typo_min_length:
            return np.empty(0, dtype=np.int64)
        found = {t for key in _deletions(token) for t in self._typo_keys.get(key, ())}
        return np.array(sorted(found), dtype=np.int64)


def _stem(word: str) -> str:
    """Strip one common English inflection so "masks", "tested", "testing" meet their base form."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "xes", "zes", "ches", "shes")):
        word = word[:-2]
    else:
        for suffix in ("ing", "ed", "s"):
            # "virus", "lens", "tennis", "class" are not plurals.
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                break
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                break
    # A final "e" comes and goes with the suffix ("make", "making"): drop it on both sides.
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _deletions(word: str) -> set[str]:
    """The word itself and every string made by deleting one of its characters."""
    return {word} | {word[:i] + word[i + 1 :] for i in range(len(word))}
