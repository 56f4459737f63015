"""Lexical indexes stored beside their index file: prepared by ingest, read by serving processes."""

from __future__ import annotations

import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from autocomplete import builds, lexical_store, search
from autocomplete.conf import app_settings
from autocomplete.models import Corpus, QAPair
from embeddings.lexical import LexicalIndex
from embeddings.synonyms import SynonymMap

from .conftest import SMALL_FAQ

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


def test_a_damaged_file_or_changed_questions_are_rebuilt(small_corpus: Corpus, caplog) -> None:
    (stored,) = _stored(small_corpus)
    path = app_settings().index_dir / stored
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncated
    search.forget_loaded()
    assert search.suggestions_for("reset my passw", corpus="small").suggestions[0].question == (
        "How do I reset my password?"
    )
    assert f"Lexical index {stored} is unreadable" in caplog.text
    with np.load(path, allow_pickle=False) as arrays:  # stored whole again
        assert len(LexicalIndex.from_arrays(arrays)) == len(SMALL_FAQ)
    QAPair.objects.filter(corpus=small_corpus, question__startswith="Is there").update(question="Is there an app?")
    search.forget_loaded()
    assert search.suggestions_for("an app", corpus="small").suggestions[0].question == "Is there an app?"
    assert len(_stored(small_corpus)) == 2  # the edited pairs got their own file


def test_lexical_files_go_with_their_index_file(small_corpus: Corpus) -> None:
    build = small_corpus.index_builds.get(is_live=True)
    builds.delete_index_file(build.file_name)
    assert _stored(small_corpus) == []
    orphan = app_settings().index_dir / f"gone--minilm--0.faiss{lexical_store.LEXICAL_INFIX}x.npz"
    orphan.write_bytes(b"x")
    assert orphan.name in builds.remove_orphan_files(min_age_seconds=-1)


def test_pickles_of_the_retired_format_are_removed_even_beside_a_live_index(small_corpus: Corpus) -> None:
    build = small_corpus.index_builds.get(is_live=True)
    retired = app_settings().index_dir / f"{build.file_name}{lexical_store.LEXICAL_INFIX}x.pickle"
    retired.write_bytes(b"x")
    unrelated = app_settings().index_dir / "notes.pickle"
    unrelated.write_bytes(b"x")
    week_ago = time.time() - 7 * 86400
    for path in (retired, unrelated):
        os.utime(path, (week_ago, week_ago))
    assert builds.remove_orphan_files() == [retired.name]
    assert len(_stored(small_corpus)) == 1 and unrelated.exists()


class _Planted:
    """Unpickling this touches a file: what a hostile writer of shared storage would plant."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(_Planted(marker)))


def _plant_object_array(path: Path, marker: Path) -> None:
    arrays = LexicalIndex([1], ["x"]).to_arrays()
    arrays["vocabulary"] = np.array([_Planted(marker)], dtype=object)
    with path.open("wb") as handle:
        np.savez(handle, allow_pickle=True, **arrays)


@pytest.mark.parametrize("plant", [_plant_pickle, _plant_object_array])
def test_a_planted_file_never_runs_code_and_is_rebuilt(small_corpus: Corpus, tmp_path: Path, plant) -> None:
    (stored,) = _stored(small_corpus)
    marker = tmp_path / "planted-code-ran"
    plant(app_settings().index_dir / stored, marker)
    search.forget_loaded()
    assert search.suggestions_for("reset my passw", corpus="small").suggestions[0].question == (
        "How do I reset my password?"
    )
    assert not marker.exists()
    # The file was replaced by plain arrays, which the next process reads without building.
    with np.load(app_settings().index_dir / stored, allow_pickle=False) as arrays:
        assert LexicalIndex.from_arrays(arrays).complete("passw") == "password"


def test_a_compressed_archive_is_rebuilt_not_inflated(small_corpus: Corpus) -> None:
    (stored,) = _stored(small_corpus)
    path = app_settings().index_dir / stored
    with np.load(path, allow_pickle=False) as arrays:
        contents = {name: arrays[name] for name in arrays.files}
    with path.open("wb") as handle:
        np.savez_compressed(handle, **contents)
    search.forget_loaded()
    assert search.suggestions_for("reset my passw", corpus="small").suggestions
    with np.load(path, allow_pickle=False) as arrays:
        assert {member.compress_type for member in arrays.zip.infolist()} == {zipfile.ZIP_STORED}


def test_another_corpus_file_under_this_name_is_rebuilt(small_corpus: Corpus) -> None:
    (stored,) = _stored(small_corpus)
    with (app_settings().index_dir / stored).open("wb") as handle:
        np.savez(handle, allow_pickle=False, **LexicalIndex([1], ["How do I reset my password?"]).to_arrays())
    search.forget_loaded()
    assert [s.question for s in search.suggestions_for("delete my acc", corpus="small").suggestions][:1] == [
        "How do I delete my account?"
    ]


def test_the_stored_file_answers_exactly_as_the_built_index(small_corpus: Corpus, monkeypatch) -> None:
    pairs = list(QAPair.objects.filter(corpus=small_corpus).order_by("pk").values_list("pk", "question"))
    ids, questions = [pk for pk, _ in pairs], [q for _, q in pairs]
    built = LexicalIndex(ids, questions)
    monkeypatch.setattr(LexicalIndex, "__init__", None)  # ingest stored it: reading it must build nothing
    read = lexical_store.lexical_index_for(small_corpus.index_builds.get(is_live=True).file_name, ids, questions)
    for query in [q[:n] for q in questions for n in range(1, len(q) + 1)]:
        assert np.array_equal(read.scores_all(query), built.scores_all(query))


def test_the_file_is_versioned_by_its_format_constant_not_by_source_code(monkeypatch) -> None:
    ids, questions = [1, 2], ["How do I reset my password?", "Is there a mobile app?"]
    path = lexical_store.lexical_file("c--minilm--0.faiss", ids, questions)
    # The same pairs and format give the same file in every process, whatever the code's comments say.
    assert lexical_store.lexical_file("c--minilm--0.faiss", ids, questions) == path
    monkeypatch.setattr(lexical_store, "LEXICAL_FORMAT", lexical_store.LEXICAL_FORMAT + 1)
    # A new format is never read from an older file: serving processes rebuild it once.
    assert lexical_store.lexical_file("c--minilm--0.faiss", ids, questions) != path


def test_synonyms_name_their_own_file_and_are_in_what_it_holds() -> None:
    ids, questions = [1, 2], ["Is the wifi down?", "Is there a mobile app?"]
    synonyms = SynonymMap.build([(["wifi", "wireless"], [])])
    plain = lexical_store.lexical_file("c--minilm--0.faiss", ids, questions)
    assert lexical_store.lexical_file("c--minilm--0.faiss", ids, questions, synonyms=synonyms) != plain
    lexical_store.lexical_index_for("c--minilm--0.faiss", ids, questions, synonyms=synonyms)
    read = lexical_store.lexical_index_for("c--minilm--0.faiss", ids, questions, synonyms=synonyms)
    assert read.search("wireless", limit=2) == [(1, 1.0)]
    assert lexical_store.lexical_index_for("c--minilm--0.faiss", ids, questions).search("wireless", limit=2) == []
