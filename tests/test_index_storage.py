"""Index files through Django's storage API: read in place from the local default, downloaded, checked
and cached from a storage with no local path (Django's InMemoryStorage), swapped in without a
failed request, and removed from the storage and the caches once no server can still be loading them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.core.files.storage import InMemoryStorage, storages
from django.test import Client

from autocomplete import backup, builds, index_storage, search
from autocomplete.builds import IndexWriteError
from autocomplete.conf import app_settings
from autocomplete.health import index_file_problem
from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus, IndexBuild
from autocomplete.parsing import parse_qa_file
from embeddings.encoders import Encoder

from .conftest import SMALL_FAQ, faq_csv

pytestmark = pytest.mark.django_db

STORAGE = "test_indexes"
EXTRA = ("Do you offer a student discount?", "Yes: half price with a valid student card.")


@pytest.fixture
def memory_storage(settings: Any, configure: Callable[..., None], tmp_path: Path) -> InMemoryStorage:
    """Index files in memory: a real storage whose files have no local path, as in S3."""
    settings.STORAGES = {**settings.STORAGES, STORAGE: {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    configure(INDEX_STORAGE=STORAGE, INDEX_CACHE_DIR=tmp_path / "cache")
    storage = storages[STORAGE]
    assert isinstance(storage, InMemoryStorage)
    return storage


def ingest(corpus: Corpus, pairs: list[tuple[str, str]]) -> IndexBuild:
    ingest_parsed(corpus, parse_qa_file(faq_csv(pairs), filename="faq.csv"), mode="replace", encoder_key="minilm")
    return IndexBuild.objects.get(corpus=corpus, is_live=True)


def stored(storage: InMemoryStorage) -> list[str]:
    return sorted(storage.listdir("")[1])


def cached() -> list[str]:
    directory = app_settings().index_cache_dir
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def top(client: Client, query: str) -> str:
    response = client.get("/api/suggest", {"q": query, "corpus": "small"})
    assert response.status_code == 200, response.content
    suggestions = response.json()["suggestions"]
    return str(suggestions[0]["question"]) if suggestions else ""


def test_the_local_default_reads_files_in_place_without_copies(db: None, minilm: Encoder, client: Client) -> None:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    build = ingest(corpus, SMALL_FAQ)
    assert index_storage.is_local()
    assert index_storage.fetch(build.file_name) == app_settings().index_dir / build.file_name
    assert top(client, "reset my password") == "How do I reset my password?"
    assert not app_settings().index_cache_dir.exists()


def test_a_build_is_written_once_to_the_storage_and_downloaded_by_a_server(
    memory_storage: InMemoryStorage, minilm: Encoder, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    build = ingest(corpus, SMALL_FAQ)
    files = stored(memory_storage)
    assert [name for name in files if name.endswith(".faiss")] == [build.file_name]
    assert len(files) == 2 and not app_settings().index_dir.exists()  # the index and its lexical index
    # Another server: no copy of its own yet, so it downloads both files once, then answers from memory.
    for name in cached():
        (app_settings().index_cache_dir / name).unlink()
    search.forget_loaded()
    assert top(client, "reset my password") == "How do I reset my password?"
    assert cached() == files
    assert caplog.text.count("downloaded into") == 2
    assert top(client, "cancel my plan") == "How do I cancel my subscription?"
    assert caplog.text.count("downloaded into") == 2


def test_a_downloaded_file_that_differs_from_its_build_is_refused(
    memory_storage: InMemoryStorage, minilm: Encoder, client: Client
) -> None:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    build = ingest(corpus, SMALL_FAQ)
    data = memory_storage.open(build.file_name).read()
    memory_storage.delete(build.file_name)
    memory_storage.save(build.file_name, ContentFile(data[:-1] + bytes([data[-1] ^ 1])))
    (app_settings().index_cache_dir / build.file_name).unlink()
    search.forget_loaded()
    response = client.get("/api/suggest", {"q": "password", "corpus": "small"})
    assert response.status_code == 503
    assert "the stored index file differs from the one that was built" in response.json()["error"]
    assert build.file_name not in cached()  # never kept, so a repaired file is downloaded afresh


def test_a_new_build_swaps_in_and_the_old_one_answers_while_it_cannot_be_fetched(
    memory_storage: InMemoryStorage, minilm: Encoder, client: Client
) -> None:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    ingest(corpus, SMALL_FAQ)
    assert top(client, "student discount") != EXTRA[0]
    new = ingest(corpus, [*SMALL_FAQ, EXTRA])
    # The storage loses the new file before this server fetched it (an outage, a lagging replica).
    data = memory_storage.open(new.file_name).read()
    memory_storage.delete(new.file_name)
    (app_settings().index_cache_dir / new.file_name).unlink()
    assert top(client, "student discount") != EXTRA[0]  # answered by the build before, not a 503
    memory_storage.save(new.file_name, ContentFile(data))
    assert top(client, "student discount") == EXTRA[0]
    assert new.pk in search.loaded_spaces()


def test_superseded_builds_go_from_storage_and_caches_only_after_the_grace(
    memory_storage: InMemoryStorage,
    minilm: Encoder,
    client: Client,
    configure: Callable[..., None],
    django_capture_on_commit_callbacks: Any,
) -> None:
    configure(SUPERSEDED_GRACE_SECONDS=1.0)
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    first = ingest(corpus, SMALL_FAQ)
    top(client, "reset my password")
    for extra in range(builds.KEEP_SUPERSEDED_FILES + 1):
        ingest(corpus, [*SMALL_FAQ, (f"Extra question {extra}?", "x")])
    # Within the grace every build stays, though more are superseded than KEEP_SUPERSEDED_FILES.
    assert IndexBuild.objects.filter(corpus=corpus).count() == builds.KEEP_SUPERSEDED_FILES + 2
    assert first.file_name in stored(memory_storage) and first.file_name in cached()
    time.sleep(1.1)
    with django_capture_on_commit_callbacks(execute=True):
        builds.remove_orphan_files()
    remaining = set(IndexBuild.objects.filter(corpus=corpus).values_list("file_name", flat=True))
    assert first.file_name not in remaining and len(remaining) == builds.KEEP_SUPERSEDED_FILES + 1
    assert {n.split(".lexical-")[0] for n in stored(memory_storage)} == remaining
    assert not [name for name in cached() if name.startswith(first.file_name)]
    assert top(client, "extra question").startswith("Extra question")


def test_grace_shorter_than_the_catalog_interval_is_refused(configure: Callable[..., None]) -> None:
    configure(CATALOG_TTL_SECONDS=5.0, SUPERSEDED_GRACE_SECONDS=5.0)
    with pytest.raises(ImproperlyConfigured, match="must exceed CATALOG_TTL_SECONDS"):
        app_settings()


@pytest.mark.django_db(transaction=True)  # a backup reads what is committed
def test_a_backup_reads_the_storage_and_a_restore_writes_it_back(
    memory_storage: InMemoryStorage, minilm: Encoder, client: Client, tmp_path: Path
) -> None:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    build = ingest(corpus, SMALL_FAQ)
    files = stored(memory_storage)
    manifest = backup.backup_to(tmp_path / "backup")
    assert sorted(entry["name"] for entry in manifest["files"] if entry["name"].startswith("indexes/")) == [
        f"indexes/{name}" for name in files
    ]
    for name in files:
        memory_storage.delete(name)
        (app_settings().index_cache_dir / name).unlink()
    backup.restore_from(tmp_path / "backup", force=True)
    assert stored(memory_storage) == files
    assert (
        memory_storage.open(build.file_name).read() == (tmp_path / "backup" / "indexes" / build.file_name).read_bytes()
    )
    search.forget_loaded()
    assert top(client, "reset my password") == "How do I reset my password?"


def test_the_admin_sees_a_build_missing_from_the_storage(memory_storage: InMemoryStorage, minilm: Encoder) -> None:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    build = ingest(corpus, SMALL_FAQ)
    (app_settings().index_cache_dir / build.file_name).unlink()  # a machine that has not downloaded it
    assert index_file_problem(build) is None
    memory_storage.delete(build.file_name)
    assert index_file_problem(build) == "the index file is missing"


def test_a_storage_that_refuses_the_build_fails_it_in_words(
    settings: Any, configure: Callable[..., None], tmp_path: Path, minilm: Encoder
) -> None:
    corpus = Corpus.objects.create(name="Small FAQ", slug="small", default_encoder="minilm")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the storage's directory should be")
    backend = {"BACKEND": "tests.shared_storage.SharedDirectoryStorage", "OPTIONS": {"location": str(blocker)}}
    settings.STORAGES = {**settings.STORAGES, STORAGE: backend}
    configure(INDEX_STORAGE=STORAGE, INDEX_CACHE_DIR=tmp_path / "cache")
    with pytest.raises(IndexWriteError, match=r"the index storage \(AUTOCOMPLETE_INDEX_STORAGE\) refused it"):
        ingest(corpus, SMALL_FAQ)
    assert not IndexBuild.objects.filter(corpus=corpus).exists()
