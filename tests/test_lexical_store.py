"""Lexical indexes stored beside their index file: prepared by ingest, read by serving processes."""

from __future__ import annotations

import hashlib
import hmac
import pickle
from pathlib import Path

import pytest

from autocomplete import builds, lexical_store, search
from autocomplete.conf import app_settings
from autocomplete.models import Corpus, QAPair
from embeddings.lexical import LexicalIndex

pytestmark = pytest.mark.django_db


def _stored(corpus: Corpus) -> list[str]:
    build = corpus.index_builds.get(is_live=True)
    return sorted(p.name for p in app_settings().index_dir.glob(f"{build.file_name}{lexical_store.LEXICAL_INFIX}*"))


def test_ingest_stores_the_lexical_index_and_serving_reads_it(small_corpus: Corpus, monkeypatch) -> None:
    assert len(_stored(small_corpus)) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("the stored lexical index should have been read")

    monkeypatch.setattr(LexicalIndex, "__init__", refuse)
    result = search.suggestions_for("reset my passw", corpus="small")
    assert result.suggestions[0].question == "How do I reset my password?"


def test_changed_questions_or_a_damaged_file_are_rebuilt(small_corpus: Corpus) -> None:
    (stored,) = _stored(small_corpus)
    (app_settings().index_dir / stored).write_bytes(b"not a pickle")
    QAPair.objects.filter(corpus=small_corpus, question__startswith="Is there").update(question="Is there an app?")
    assert search.suggestions_for("an app", corpus="small").suggestions[0].question == "Is there an app?"
    assert len(_stored(small_corpus)) == 2  # the edited pairs got their own file
    search.forget_loaded()
    assert search.suggestions_for("reset my passw", corpus="small").suggestions


def test_lexical_files_go_with_their_index_file(small_corpus: Corpus) -> None:
    build = small_corpus.index_builds.get(is_live=True)
    builds.delete_index_file(build.file_name)
    assert _stored(small_corpus) == []
    orphan = app_settings().index_dir / f"gone--minilm--0.faiss{lexical_store.LEXICAL_INFIX}x.pickle"
    orphan.write_bytes(b"x")
    assert orphan.name in builds.remove_orphan_files(min_age_seconds=-1)


class _Planted:
    """Unpickling this touches a file: what a hostile writer of shared storage would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_file_not_signed_with_this_secret_key_is_never_unpickled(small_corpus: Corpus, tmp_path: Path) -> None:
    (stored,) = _stored(small_corpus)
    marker = tmp_path / "planted-code-ran"
    payload = pickle.dumps(_Planted(marker))
    forged = hmac.new(b"another deployment's key", payload, hashlib.sha256).digest()
    (app_settings().index_dir / stored).write_bytes(forged + payload)
    search.forget_loaded()
    assert search.suggestions_for("reset my passw", corpus="small").suggestions[0].question == (
        "How do I reset my password?"
    )
    assert not marker.exists()
    # The file was replaced by a signed one, which the next process reads without rebuilding.
    data = (app_settings().index_dir / stored).read_bytes()
    assert data[:32] == lexical_store.sign(data[32:])


def test_the_file_is_versioned_by_its_format_constant_not_by_source_code(monkeypatch) -> None:
    ids, questions = [1, 2], ["How do I reset my password?", "Is there a mobile app?"]
    path = lexical_store.lexical_file("c--minilm--0.faiss", ids, questions)
    # The same pairs and format give the same file in every process, whatever the code's comments say.
    assert lexical_store.lexical_file("c--minilm--0.faiss", ids, questions) == path
    monkeypatch.setattr(lexical_store, "LEXICAL_FORMAT", lexical_store.LEXICAL_FORMAT + 1)
    # A new format is never read from an older file: serving processes rebuild it once.
    assert lexical_store.lexical_file("c--minilm--0.faiss", ids, questions) != path
