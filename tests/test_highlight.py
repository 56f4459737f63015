"""Highlight offsets: whole finished words and the typed beginning of the last one, read as the
lexical index reads words, pointing into the text as written."""

from __future__ import annotations

import unicodedata

import pytest

from embeddings.highlight import match_spans
from embeddings.typed_query import TypedQuery


def marked(query: str, text: str) -> list[str]:
    return [text[start:end] for start, end in match_spans(query, text)]


def test_finished_words_match_whole_and_the_last_word_by_its_beginning() -> None:
    text = "How do I upload my questions?"
    assert match_spans("how do I upl", text) == [(0, 3), (4, 6), (7, 8), (9, 12)]
    assert marked("questions upl", text) == ["upl", "questions"]
    # Finished, "upl" is a word of its own, which the text does not hold.
    assert marked("upl ", text) == []
    # A finished word never matches by its beginning, nor inside another word.
    assert marked("up question ", text) == []


def test_case_accents_and_compatibility_forms_are_ignored() -> None:
    assert marked("CAFE ", "Le café est ouvert") == ["café"]
    assert marked("strasse ", "Die Straße") == ["Straße"]
    assert marked("find", "ﬁnd it") == ["ﬁnd"]
    assert marked("ｈｅｌｐ ", "help me") == ["help"]


def test_offsets_point_into_the_text_as_written_even_when_decomposed() -> None:
    decomposed = unicodedata.normalize("NFD", "Résumé upload: où?")
    assert len(decomposed) == 21  # three accents, each a letter plus a combining mark
    spans = match_spans("resume ou", decomposed)
    # The accented word keeps its marks, and the prefix cut never separates a letter from its mark.
    assert [decomposed[a:b] for a, b in spans] == [unicodedata.normalize("NFD", "Résumé"), "ou\u0300"]
    assert marked("resu", decomposed) == ["Re\u0301su"]
    assert marked("stra", "Die Straße") == ["Stra"]
    # A typed beginning that ends inside what one character normalises to covers the whole character.
    assert marked("s", "ß") == ["ß"]


def test_markup_in_the_text_is_only_words_around_punctuation() -> None:
    text = "Use <script>alert(1)</script> tags"
    assert match_spans("script tags", text) == [(5, 11), (22, 28), (30, 34)]


@pytest.mark.parametrize("query", ["", "   ", "?!", "-"])
def test_nothing_typed_marks_nothing(query: str) -> None:
    assert match_spans(query, "How do I reset my password?") == []


def test_a_parsed_query_gives_the_same_spans() -> None:
    text = "Where can I download my invoices?"
    assert (
        match_spans(TypedQuery.parse("download inv"), text)
        == match_spans("download inv", text)
        == [
            (12, 20),
            (24, 27),
        ]
    )
