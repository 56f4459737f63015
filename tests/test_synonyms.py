"""Synonyms as the lexical index applies them (embeddings/synonyms.py)."""

from __future__ import annotations

from embeddings.lexical import LexicalIndex
from embeddings.synonyms import NO_SYNONYMS, SynonymMap
from embeddings.typed_query import tokenize

TEXTS = ["Is the wifi down?", "Wireless printer setup", "My wi-fi drops", "Buy a notebook", "Laptop battery"]


def test_a_group_adds_every_other_member_to_texts_holding_one() -> None:
    synonyms = SynonymMap.build([(["wifi", "Wi-Fi", "wireless"], [])])
    assert synonyms.expand(tokenize(TEXTS[0])) == ["is", "the", "wifi", "down", "fi", "wi", "wireless"]
    # A phrase counts only as consecutive words.
    assert synonyms.expand(tokenize(TEXTS[2])) == ["my", "wi", "fi", "drops", "wifi", "wireless"]
    assert synonyms.expand(["fi", "and", "wi"]) == ["fi", "and", "wi"]


def test_one_way_adds_the_source_to_texts_holding_the_target_only() -> None:
    synonyms = SynonymMap.build([(["laptop"], ["notebook"])])
    assert synonyms.expand(["buy", "a", "notebook"]) == ["buy", "a", "notebook", "laptop"]
    assert synonyms.expand(["laptop", "battery"]) == ["laptop", "battery"]


def test_queries_find_texts_through_synonyms_while_typing() -> None:
    ids = list(range(len(TEXTS)))
    plain = LexicalIndex(ids, TEXTS)
    index = LexicalIndex(
        ids, TEXTS, synonyms=SynonymMap.build([(["wifi", "wi-fi", "wireless"], []), (["laptop"], ["notebook"])])
    )
    assert {i for i, _ in plain.search("wireless", limit=5)} == {1}
    assert {i for i, _ in index.search("wireless", limit=5)} == {0, 1, 2}
    assert {i for i, _ in index.search("wirel", limit=5)} == {0, 1, 2}  # the unfinished word too
    assert {i for i, _ in index.search("wi fi", limit=5)} >= {0, 1, 2}
    assert {i for i, _ in index.search("laptop", limit=5)} == {3, 4}
    assert {i for i, _ in index.search("notebook", limit=5)} == {3}
    # Synonyms never make texts look like duplicates of each other.
    assert len(set(index.duplicate_group(ids).tolist())) == len(ids)


def test_equal_entries_make_equal_maps_and_empty_is_falsy() -> None:
    one = SynonymMap.build([(["a b", "c"], [])])
    assert one == SynonymMap.build([(["c", "A  B"], [])])
    assert hash(one) == hash(SynonymMap.build([(["c", "a-b"], [])]))
    assert one != NO_SYNONYMS and not NO_SYNONYMS and one
    assert one.digest_text() == "a b>c;c>a,b"
    assert not SynonymMap.build([(["alone"], []), ([], ["x"]), (["", "!"], [])])
