"""Tests for embeddings.lexical: prefix and whole-word matching, typos, scores, selection."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embeddings.lexical import LexicalIndex, LexicalParams

TEXTS = {
    1: "How do I wear a face mask?",
    2: "Can pets catch COVID-19?",
    3: "Is the Café open on Sundays?",
    4: "How does the coronavirus spread?",
    5: "How long does the virus survive on surfaces?",
    6: "Should I disinfect my groceries?",
    7: "how do i wear a FACE mask",
}


@pytest.fixture(scope="module")
def index() -> LexicalIndex:
    return LexicalIndex(list(TEXTS), list(TEXTS.values()))


def ids_of(results: list[tuple[int, float]]) -> list[int]:
    return [i for i, _ in results]


def test_unfinished_last_word_matches_words_it_begins(index: LexicalIndex) -> None:
    assert ids_of(index.search("coronav", limit=3)) == [4]
    assert set(ids_of(index.search("sur", limit=5))) == {5}


def test_earlier_words_match_whole_words_only(index: LexicalIndex) -> None:
    # "coronav" followed by a space is a finished word that is no word of the corpus.
    assert index.search("coronav ", limit=3) == []
    assert ids_of(index.search("pets catch", limit=3)) == [2]


def test_finished_query_matches_whole_words(index: LexicalIndex) -> None:
    assert index.search("surf?", limit=3) == []


def test_accents_and_case_do_not_matter(index: LexicalIndex) -> None:
    assert ids_of(index.search("CAFE", limit=3)) == [3]
    assert ids_of(index.search("sundáys", limit=3)) == [3]


def test_typo_in_a_long_word_still_matches_with_less_credit(index: LexicalIndex) -> None:
    [(doc, score)] = index.search("disinfcet groceries", limit=3)
    assert doc == 6
    assert 0.5 < score < 1.0


def test_short_words_get_no_typo_tolerance(index: LexicalIndex) -> None:
    assert index.search("pats ", limit=3) == []


def test_typo_tolerance_can_be_switched_off() -> None:
    strict = LexicalIndex([1], ["disinfect groceries"], params=LexicalParams(typo_weight=0.0))
    assert strict.search("disinfcet ", limit=3) == []


def test_scores_are_normalised_per_query(index: LexicalIndex) -> None:
    scores = index.scores_all("how does the virus spread around")
    assert scores.dtype == np.float32
    assert ((scores >= 0) & (scores <= 1)).all()
    assert index.search("how does the coronavirus spread?", limit=1)[0][1] == pytest.approx(1.0)


def test_unknown_words_lower_the_score(index: LexicalIndex) -> None:
    known = index.scores_for("pets catch", [2])[0]
    diluted = index.scores_for("pets catch zyxwv", [2])[0]
    assert 0 < diluted < known


def test_gibberish_matches_nothing(index: LexicalIndex) -> None:
    assert index.search("qwzx plmk", limit=5) == []
    assert not index.scores_all("qwzx plmk").any()


def test_scores_for_returns_zero_for_unknown_ids(index: LexicalIndex) -> None:
    scores = index.scores_for("face mask", [1, 99, 3])
    assert scores[0] == pytest.approx(1.0)
    assert scores[1] == 0.0
    assert scores[2] == 0.0


def test_search_orders_best_first_and_breaks_ties_by_index_order(index: LexicalIndex) -> None:
    results = index.search("how do i wear a face mask", limit=10)
    assert ids_of(results)[:2] == [1, 7]
    assert [s for _, s in results] == sorted((s for _, s in results), reverse=True)


def test_search_respects_limit(index: LexicalIndex) -> None:
    assert len(index.search("how", limit=2)) == 2
    assert index.search("how", limit=0) == []


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_top_agrees_with_a_full_sort_despite_ties(limit: int) -> None:
    texts = [" ".join(["alpha"] * (n % 2) + ["beta"] * (n % 3 > 0) + [f"w{n % 5}"]) for n in range(60)]
    index = LexicalIndex(range(60), texts)
    scores = index.scores_all("alpha beta w1")
    expected = sorted(((i, float(s)) for i, s in enumerate(scores) if s > 0), key=lambda p: -p[1])
    assert index.top(scores, limit=limit) == expected[:limit]


def test_short_prefix_expansion_is_capped() -> None:
    texts = [f"word{n:03d}" for n in range(200)]
    capped = LexicalIndex(range(200), texts, params=LexicalParams(max_expansions=10))
    assert len(capped.search("w", limit=500)) == 10


def test_duplicate_texts_share_a_group(index: LexicalIndex) -> None:
    groups = index.duplicate_group([1, 7, 2, 42])
    assert groups[0] == groups[1]
    assert len(set(groups.tolist())) == 3


def test_mismatched_or_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        LexicalIndex([1, 2], ["a"])
    with pytest.raises(ValueError, match="unique"):
        LexicalIndex([1, 1], ["a", "b"])


def test_empty_index_and_empty_query() -> None:
    empty = LexicalIndex([], [])
    assert empty.search("anything", limit=5) == []
    assert LexicalIndex([1], ["hello"]).search("", limit=5) == []


def test_completion_picks_the_word_most_texts_contain() -> None:
    texts = ["reset my password", "forgot password", "password rules", "passport photo", "pass the salt"]
    index = LexicalIndex(range(len(texts)), texts)
    assert index.complete("pas") == "password"
    assert index.complete("passp") == "passport"
    assert index.complete("xyz") is None
    assert index.complete("") is None


def test_completion_prefers_the_word_itself_on_a_tie(index: LexicalIndex) -> None:
    # "mask" and "masks" would tie on one text each; the typed word, being whole, wins.
    tied = LexicalIndex([1, 2], ["wear a mask", "two masks"])
    assert tied.complete("mask") == "mask"
    assert index.complete("sur") == "surfaces"


def test_dense_columns_for_frequent_words_score_exactly_as_postings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Frequent words are credited through dense 0/1 columns (speed); every score must be what the
    # postings alone give: whole words, inflections (two readings), typos and prefixes whose
    # expansions mix frequent and rare words.
    from embeddings import lexical

    rng = np.random.default_rng(7)
    common = ["how", "do", "i", "the", "mask", "masks", "wear", "what", "is", "vaccine"]
    rare = ["masked", "wearing", "whatever", "vaccines", "vaccination", "island", "doctor", "dosage", "theory"]
    texts = [
        " ".join(rng.choice(common, size=4).tolist() + rng.choice(rare, size=int(rng.integers(0, 3))).tolist())
        for _ in range(400)
    ]
    ids = list(range(1, len(texts) + 1))
    monkeypatch.setattr(lexical, "_DENSE_MIN_DF", 10**9)
    sparse_index = LexicalIndex(ids, texts)
    monkeypatch.setattr(lexical, "_DENSE_MIN_DF", 1)
    monkeypatch.setattr(lexical, "_DENSE_MIN_SHARE", 0.2)
    dense_index = LexicalIndex(ids, texts)
    assert dense_index.dense_word_count >= len(common) - 1 and sparse_index.dense_word_count == 0

    queries = ["how do i", "how do i wear the mask ", "masks", "vaccine", "vacine island", "wh", "do", "is", "m", "the"]
    for query in queries + [q[:n] for q in queries for n in range(1, len(q))]:
        np.testing.assert_allclose(dense_index.scores_all(query), sparse_index.scores_all(query), rtol=1e-6, atol=1e-7)


def _top_reference(index: LexicalIndex, scores: np.ndarray, limit: int) -> list[tuple[int, float]]:
    """The selection over every text, as `top` did before its shortlist (same semantics)."""
    from embeddings.lexical import _BINS

    bins = np.clip(np.ceil(scores * _BINS), 0, _BINS).astype(np.int32)
    counts = np.bincount(bins, minlength=_BINS + 1)[1:]
    above = np.cumsum(counts[::-1])
    cut = _BINS - int(np.searchsorted(above, limit)) if above[-1] > limit else 1
    hits = np.flatnonzero(bins >= cut)
    if hits.size > limit:
        clear = hits[bins[hits] > cut]
        hits = np.concatenate((clear, hits[bins[hits] == cut][: limit - clear.size]))
    hits = hits[np.lexsort((hits, -scores[hits]))]
    return [(int(index.ids[p]), float(scores[p])) for p in hits]


def test_top_shortlist_selects_exactly_what_the_full_selection_does() -> None:
    # Lexical scores are sums of a few credits, so they tie heavily; the shortlist must still pick
    # the same texts in the same order, tie-breaks and rounding included.
    rng = np.random.default_rng(11)
    n = 3000
    index = LexicalIndex(list(range(n)), [f"text {i}" for i in range(n)])
    for trial in range(300):
        levels = np.concatenate(([0.0], rng.uniform(0, 1, size=int(rng.integers(1, 12)))))
        # Skewed shares: often only a handful of texts score near the best, as in real queries.
        shares = rng.dirichlet(np.full(len(levels), 0.3))
        scores = rng.choice(levels, size=n, p=shares).astype(np.float32)
        if trial % 3 == 0:
            scores += rng.uniform(0, 1e-3, size=n).astype(np.float32) * (scores > 0)
        scores = np.minimum(scores, 1.0)
        for limit in (1, 5, 10, 50):
            assert index.top(scores, limit=limit) == _top_reference(index, scores, limit)


def _demo_texts() -> list[str]:
    """A few hundred real questions and answers (the demo FAQ), with a duplicate question."""
    with (Path(__file__).resolve().parents[1] / "fixtures" / "demo_faq.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [row["question"] for row in rows] + [row["answer"] for row in rows] + [rows[0]["question"].upper()]


def _through_a_file(index: LexicalIndex, path: Path) -> LexicalIndex:
    """`index` written and read back as the lexical store does: an npz archive, pickling refused."""
    np.savez(path, allow_pickle=False, **index.to_arrays())
    with np.load(path, allow_pickle=False) as arrays:
        return LexicalIndex.from_arrays(arrays)


@pytest.mark.parametrize("stored", ["defaults", "dense columns and length penalty"])
def test_an_index_read_back_from_its_arrays_answers_exactly_as_the_built_one(
    stored: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embeddings import lexical

    params = LexicalParams()
    if stored != "defaults":
        monkeypatch.setattr(lexical, "_DENSE_MIN_DF", 8)
        params = LexicalParams(typo_weight=0.7, typo_min_length=4, max_expansions=16, length_penalty=0.5)
    texts = _demo_texts()
    ids = np.random.default_rng(3).permutation(10**6)[: len(texts)].tolist()
    built = LexicalIndex(ids, texts, params=params)
    loaded = _through_a_file(built, tmp_path / "lexical.npz")
    assert (built.dense_word_count > 0) == (stored != "defaults")
    assert loaded.params == built.params and loaded.vocabulary == built.vocabulary
    words = sorted({w for t in texts[:60] for w in t.split()})
    typos = [w[:2] + w[3:] for w in words if len(w) > 5] + [w[:-1] + "x " for w in words if len(w) > 4]
    prefixes = [t[:n] for t in texts[:60] for n in range(1, len(t) + 1)] + typos + ["", "zzz", "how do i "]
    for prefix in prefixes:
        scores = built.scores_all(prefix)
        assert np.array_equal(loaded.scores_all(prefix), scores), prefix
        assert loaded.top(scores, limit=10) == built.top(scores, limit=10), prefix
        last = prefix.split()[-1].lower() if prefix.split() else ""
        assert loaded.complete(last) == built.complete(last), prefix
    probe = [*ids, -5, 10**7]
    assert np.array_equal(loaded.duplicate_group(probe), built.duplicate_group(probe))
    assert np.array_equal(loaded.scores_for("how", probe), built.scores_for("how", probe))


def test_an_empty_index_reads_back(tmp_path: Path) -> None:
    loaded = _through_a_file(LexicalIndex([], []), tmp_path / "empty.npz")
    assert len(loaded) == 0 and loaded.search("anything", limit=5) == []


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("docs", lambda a: a + 10**6),  # postings pointing past the last text
        ("ptr", lambda a: a[::-1].copy()),  # pointers that go backwards
        ("idf", lambda a: a.astype(np.float32)),  # another dtype
        ("group", lambda a: a[:-1]),  # one text short
        ("vocabulary", lambda a: np.append(a, np.frombuffer(b"\nextra", np.uint8))),  # a word too many
    ],
)
def test_arrays_that_do_not_fit_together_are_refused(name: str, damage: Callable[[Any], Any]) -> None:
    arrays = LexicalIndex(list(TEXTS), list(TEXTS.values())).to_arrays()
    arrays[name] = damage(arrays[name])
    with pytest.raises(ValueError):
        LexicalIndex.from_arrays(arrays)
    del arrays[name]
    with pytest.raises(KeyError):
        LexicalIndex.from_arrays(arrays)
