"""Tests for embeddings.typed_query: normalisation, words, and what is still being typed."""

from __future__ import annotations

import unicodedata

import pytest

from embeddings.typed_query import TypedQuery, normalise_text, tokenize


def test_normalise_folds_case_accents_and_compatibility_forms() -> None:
    assert normalise_text("Café ÉTÉ ﬁle Straße") == "cafe ete file strasse"


@pytest.mark.parametrize("text", ["How do I Wear a MASK?", "  tabs\tand 123 ", "", "C'est l'ÉTÉ"])
def test_ascii_fast_path_normalises_as_the_full_path(text: str) -> None:
    folded = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text).casefold())
    assert normalise_text(text) == "".join(ch for ch in folded if not unicodedata.combining(ch))


def test_tokenize_splits_on_punctuation_and_underscores() -> None:
    assert tokenize("COVID-19? face_mask, naïve!") == ["covid", "19", "face", "mask", "naive"]


@pytest.mark.parametrize(
    ("query", "partial"),
    [("how do", True), ("how do ", False), ("covid?", False), ("", False), ("é", True)],
)
def test_ends_inside_word(query: str, partial: bool) -> None:
    assert TypedQuery.parse(query).ends_inside_word is partial


def test_an_unfinished_word_is_set_apart_from_the_finished_ones() -> None:
    typed = TypedQuery.parse("How do I RESET my pas")
    assert typed.words == ("how", "do", "i", "reset", "my", "pas")
    assert typed.finished_words == ("how", "do", "i", "reset", "my")
    assert typed.unfinished_word == "pas"
    assert typed.before_last_word == "How do I RESET my "
    assert typed.last_word == ("pas",)


def test_a_text_ending_in_a_space_or_punctuation_has_no_unfinished_word() -> None:
    for text in ("how do I reset ", "reset?"):
        typed = TypedQuery.parse(text)
        assert typed.unfinished_word is None
        assert typed.finished_words == typed.words
    assert TypedQuery.parse("reset?").before_last_word == "reset?"


def test_a_last_word_that_normalises_to_several_words_is_kept_whole() -> None:
    # NFKC turns the vulgar fraction into "1⁄2", two words: nothing single to complete.
    typed = TypedQuery.parse("add ½")
    assert typed.last_word == ("1", "2")
    assert typed.unfinished_word == "2"


def test_of_parses_text_once_and_passes_a_parse_through() -> None:
    typed = TypedQuery.parse("how do")
    assert TypedQuery.of(typed) is typed
    assert TypedQuery.of("how do") == typed
