"""A read-only or full index directory during a build: the job fails in words, the old index stays live,
and no temp or half-written file is left behind."""

from __future__ import annotations

import errno
import io
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from autocomplete import jobs
from autocomplete.conf import app_settings
from autocomplete.models import Corpus, IndexBuild, IngestJob

from .conftest import SMALL_FAQ, faq_csv

pytestmark = pytest.mark.django_db

# Where each fault shows first: a read-only directory refuses to create the temp file; a full
# disk is often reported only when the data is flushed.
FAULTS = {
    "read-only": ("mkstemp", errno.EROFS, "the index directory (AUTOCOMPLETE_INDEX_DIR) is not writable"),
    "full": ("fsync", errno.ENOSPC, "the disk holding the index directory (AUTOCOMPLETE_INDEX_DIR) is full"),
}


def inject(monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    """Make every file write fail as the fault would (the session runs as root: chmod stops nothing)."""
    where, code, _ = FAULTS[fault]

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(f"embeddings.vector_index.{'tempfile' if where == 'mkstemp' else 'os'}.{where}", refuse)


def index_files() -> list[str]:
    return sorted(path.name for path in app_settings().index_dir.iterdir())


def prepared_job(kind: str, corpus: Corpus) -> Callable[[], IngestJob]:
    """What starts the job; an upload is stored and previewed first, before any fault."""
    if kind == "reindex":
        return lambda: jobs.create_reindex_job(corpus, encoder="minilm")
    more = [*SMALL_FAQ, ("Do you have a student discount?", "Yes, half price with a student card.")]
    preview = jobs.create_upload_preview(
        faq_csv(more), filename="more.csv", corpus=corpus, mode="merge", encoders=["minilm"]
    )
    return lambda: jobs.confirm_upload(preview)


@pytest.mark.parametrize("kind", ["reindex", "upload"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_job_fails_in_words_and_the_old_index_keeps_serving(
    fault: str,
    kind: str,
    small_corpus: Corpus,
    client: Client,
    admin_client: Client,
    configure: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(UPLOAD_DIR=tmp_path / "uploads")
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)
    before = index_files()
    start = prepared_job(kind, small_corpus)
    inject(monkeypatch, fault)
    job = start()
    monkeypatch.undo()
    job.refresh_from_db()

    words = FAULTS[fault][2]
    assert job.status == "failed"
    error = job.error
    assert error.startswith(f"The new index file could not be written: {words}")
    assert "live index are as before" in error and "run the job again" in error
    assert "Traceback" not in error and "Errno" not in error and str(tmp_path) not in error
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True) == live
    assert small_corpus.pairs.count() == 10
    assert index_files() == before  # no temp file, no orphan of the failed build
    assert client.get("/api/suggest", {"q": "reset my password"}).status_code == 200
    page = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/").content.decode()
    assert words in page


@pytest.mark.parametrize("fault", list(FAULTS))
def test_reindex_command_says_why_without_a_traceback(
    fault: str, small_corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    inject(monkeypatch, fault)
    with pytest.raises(CommandError, match=re.escape(FAULTS[fault][2])):
        call_command("reindex", "small", stdout=io.StringIO())
