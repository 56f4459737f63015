"""Background jobs: progress, cancel, failure and kill -9 that lose nothing, runs again, readers never
disturbed, and corpora indexed with Ivysaur and GIST-small (random-weight local models) side by side."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from autocomplete import builds, jobs
from autocomplete.conf import app_settings
from autocomplete.corpus_locks import corpus_lock_free
from autocomplete.encoder_registry import encoder_registry
from autocomplete.models import Corpus, IndexBuild, IngestJob, QAPair
from autocomplete.search import suggestions_for
from autocomplete.uploads import store_upload, upload_dir
from embeddings.vector_index import VectorIndex

from .conftest import SMALL_FAQ, faq_csv, held_by_another_session, start_worker

DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
NEW_PAIRS = [
    (f"How do I configure option number {n} of the widget?", f"Set widget option {n} in Settings.") for n in range(40)
]


@pytest.fixture(autouse=True)
def _private_uploads(configure, tmp_path: Path) -> None:
    configure(UPLOAD_DIR=tmp_path / "uploads")


def upload_job(corpus: Corpus, pairs: list[tuple[str, str]], *, mode: str = "merge") -> IngestJob:
    return jobs.create_upload_preview(
        faq_csv(pairs), filename="more.csv", corpus=corpus, mode=mode, encoders=["minilm"]
    )


def record_flushes(
    monkeypatch: pytest.MonkeyPatch, then: Callable[[IngestJob], None] | None = None
) -> list[dict[str, Any]]:
    """Every progress write as the admin's page would read it back from the database."""
    seen: list[dict[str, Any]] = []
    original = jobs.ProgressTracker.flush
    monkeypatch.setattr(jobs, "PROGRESS_WRITE_SECONDS", 0.0)

    def flush(self: jobs.ProgressTracker, *, check_cancel: bool = True) -> None:
        original(self, check_cancel=check_cancel)
        job = IngestJob.objects.get(pk=self.job_id)
        seen.append(
            {
                "stage": job.stage,
                "parsed": job.rows_parsed,
                "embedded": job.rows_embedded,
                "embed_total": job.embed_total,
                "indexed": job.rows_indexed,
                "status": job.status,
                "percent": jobs.job_progress(job).percent,
            }
        )
        if then:
            then(job)

    monkeypatch.setattr(jobs.ProgressTracker, "flush", flush)
    return seen


@pytest.mark.django_db
def test_progress_is_reported_batch_by_batch(small_corpus: Corpus, configure, monkeypatch) -> None:
    configure(EMBED_BATCH_SIZE=2)  # 16 texts per encode call
    seen = record_flushes(monkeypatch)
    job = jobs.confirm_upload(upload_job(small_corpus, NEW_PAIRS))
    assert job.status == "succeeded", job.error
    embedded = [s["embedded"] for s in seen if s["stage"] == "embedded"]
    assert embedded == [16, 32, 40] and {s["embed_total"] for s in seen if s["stage"] == "embedded"} == {40}
    assert seen[0]["stage"] == "parsed" and seen[0]["parsed"] == 40
    percents = [s["percent"] for s in seen]
    assert percents == sorted(percents) and 0 < percents[0] < 100
    assert (job.rows_parsed, job.rows_embedded, job.rows_indexed, job.index_total) == (40, 40, 50, 50)
    assert jobs.job_progress(job).percent == 100 and job.report["added"] == 40
    assert job.report["duration_seconds"] > 0 and job.stored_file == ""
    assert list(upload_dir().iterdir()) == []  # the upload is gone once ingested


@pytest.mark.django_db
def test_reuploading_embeds_only_changed_questions(small_corpus: Corpus, monkeypatch) -> None:
    embedded: list[str] = []
    minilm = encoder_registry().get("minilm")  # the instance jobs use (settings changes renew it)
    original = minilm.encode

    def encode(texts, **kwargs):
        embedded.extend(texts)
        return original(texts, **kwargs)

    monkeypatch.setattr(minilm, "encode", encode)
    pairs = [(q, a + " (new)") if n < 3 else (q, a) for n, (q, a) in enumerate(SMALL_FAQ)]
    pairs[5] = ("Is there an app for phones?", SMALL_FAQ[5][1])
    pairs[6] = ("How can I reach support?", SMALL_FAQ[6][1])
    job = jobs.confirm_upload(upload_job(small_corpus, pairs, mode="replace"))
    assert job.status == "succeeded", job.error
    assert (job.report["added"], job.report["updated"], job.report["removed"]) == (2, 3, 2)
    assert sorted(embedded) == ["How can I reach support?", "Is there an app for phones?"]
    # The report says so: the 3 updated answers kept their questions, whose vectors were reused.
    assert (job.report["embedded"], job.report["reused"]) == (2, 3)


@pytest.mark.django_db
def test_estimate_while_running(db: None) -> None:
    job = IngestJob(
        status="running",
        started_at=timezone.now() - timedelta(seconds=10),
        rows_parsed=10,
        rows_total=10,
        rows_embedded=50,
        embed_total=100,
    )
    view = jobs.job_progress(job)
    assert view.percent == 45 and 9.9 < view.elapsed_seconds < 11
    assert view.remaining_seconds is not None and 11 < view.remaining_seconds < 14


@pytest.mark.django_db
def test_cancel_between_batches_leaves_the_corpus_as_it_was(small_corpus: Corpus, configure, monkeypatch) -> None:
    configure(EMBED_BATCH_SIZE=2)
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)

    def admin_cancels(job: IngestJob) -> None:
        if job.stage == "embedded" and not job.cancel_requested:
            jobs.request_cancel(job)

    seen = record_flushes(monkeypatch, then=admin_cancels)
    job = jobs.confirm_upload(upload_job(small_corpus, NEW_PAIRS, mode="replace"))
    assert job.status == "cancelled" and "as before" in job.error
    # The batch in flight when the admin cancelled completes; the job stops before the third.
    assert [s["embedded"] for s in seen if s["stage"] == "embedded"] == [16, 32]
    assert small_corpus.pairs.count() == 10
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True) == live
    assert list(upload_dir().iterdir()) == []


@pytest.mark.django_db
def test_a_queued_job_cancels_at_once_and_never_runs(small_corpus: Corpus, settings) -> None:
    settings.TASKS = DATABASE_TASKS  # queued, with no worker running
    job = jobs.confirm_upload(upload_job(small_corpus, NEW_PAIRS))
    assert job.status == "queued" and job.task_id
    job = jobs.request_cancel(job)
    assert job.status == "cancelled" and job.stored_file == ""
    assert jobs.execute_job(job.pk) == "cancelled"  # a worker picking it up later does nothing
    assert small_corpus.pairs.count() == 10
    with pytest.raises(jobs.JobStateError, match="nothing to cancel"):
        jobs.request_cancel(job)


@pytest.mark.django_db
def test_a_failed_job_loses_nothing_and_runs_again(small_corpus: Corpus, monkeypatch, admin_client: Client) -> None:
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)

    def disk_full(self: VectorIndex, path: Path) -> str:
        raise OSError("No space left on device")

    monkeypatch.setattr(VectorIndex, "save", disk_full)
    job = jobs.confirm_upload(upload_job(small_corpus, SMALL_FAQ[:3] + NEW_PAIRS[:2], mode="replace"))
    assert job.status == "failed" and "No space left on device" in job.error and "run the job again" in job.error
    assert small_corpus.pairs.count() == 10
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True) == live
    assert suggestions_for("cancel my plan", corpus="small").suggestions[0].question.startswith("How do I cancel")
    page = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/").content.decode()
    assert "No space left on device" in page and 'value="rerun"' in page
    monkeypatch.undo()
    response = admin_client.post(f"/admin/autocomplete/ingestjob/{job.pk}/control/", {"action": "rerun"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 2
    assert small_corpus.pairs.count() == 5 and job.report["removed"] == 7


@pytest.mark.django_db
def test_a_running_job_whose_worker_is_gone_shows_as_interrupted(
    small_corpus: Corpus, settings, admin_client: Client
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    job = upload_job(small_corpus, NEW_PAIRS)
    job.status, job.stage, job.worker_pid = "running", "embedded", gone.pid
    job.worker_host, job.heartbeat_at = os.uname().nodename, timezone.now()
    job.save()
    # The corpus's job history (and the job list) find out, as does the job's own page.
    history = admin_client.get(f"/admin/autocomplete/corpus/{small_corpus.pk}/change/").content.decode()
    assert '<td class="job-status-interrupted">Interrupted</td>' in history
    job.refresh_from_db()
    assert job.status == "interrupted"
    assert "during 'embedded'" in job.error and "Run the job again" in job.error
    # On another machine: on PostgreSQL the corpus lock its connection holds tells, elsewhere the heartbeat.
    IngestJob.objects.filter(pk=job.pk).update(status="running", worker_host="elsewhere", heartbeat_at=timezone.now())
    job.refresh_from_db()
    if connection.vendor == "postgresql":
        with held_by_another_session("small"):
            assert jobs.refresh_liveness(job).status == "running"
        assert jobs.refresh_liveness(job).status == "interrupted"  # fresh heartbeat, but no lock
        return
    assert jobs.refresh_liveness(job).status == "running"
    old = timezone.now() - timedelta(seconds=app_settings().job_stale_seconds + 1)
    IngestJob.objects.filter(pk=job.pk).update(heartbeat_at=old)
    job.refresh_from_db()
    assert jobs.refresh_liveness(job).status == "interrupted"


@pytest.mark.django_db
def test_a_job_of_this_process_that_no_thread_runs_shows_as_interrupted(small_corpus: Corpus) -> None:
    job = upload_job(small_corpus, NEW_PAIRS)
    # The pid is alive (it is this process) but the thread that ran the job is gone.
    job.status, job.stage, job.worker_pid = "running", "embedded", os.getpid()
    job.worker_host, job.heartbeat_at = socket.gethostname(), timezone.now()
    job.save()
    assert jobs.refresh_liveness(job).status == "interrupted"


@pytest.mark.django_db
def test_stale_files_are_cleaned_up(small_corpus: Corpus, settings) -> None:
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)
    crashed = app_settings().index_dir / "small--minilm--deadbeef.faiss"
    temporary = app_settings().index_dir / ".tmp-abc.faiss"
    needed = upload_job(small_corpus, NEW_PAIRS)  # a preview still waiting for confirmation
    forgotten = store_upload(b"question,answer\n")
    two_days_ago = time.time() - 2 * 24 * 3600
    for path in (crashed, temporary):
        path.write_bytes(b"partial")
    for path in (crashed, temporary, upload_dir() / forgotten, upload_dir() / needed.stored_file):
        os.utime(path, (two_days_ago, two_days_ago))
    jobs.cleanup_stale_files()
    assert sorted(p.name for p in app_settings().index_dir.iterdir() if p.suffix == ".faiss") == [live.file_name]
    # The preview is older than AUTOCOMPLETE_PREVIEW_TTL_SECONDS? Not by its row: it stays.
    assert sorted(p.name for p in upload_dir().iterdir()) == [needed.stored_file]
    IngestJob.objects.filter(pk=needed.pk).update(created_at=timezone.now() - timedelta(days=2))
    jobs.cleanup_stale_files()
    needed.refresh_from_db()
    assert needed.status == "cancelled" and list(upload_dir().iterdir()) == []


# --- real worker processes -----------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], *, timeout: float = 120, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"worker exited early: {process.stderr.read().decode()[-3000:]}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the worker")
        time.sleep(0.05)


def _new_index_file(live: IndexBuild) -> bool:
    return any(p.suffix == ".faiss" and p.name != live.file_name for p in app_settings().index_dir.iterdir())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("moment", ["embedding", "indexing"])
def test_a_worker_killed_mid_job_loses_nothing_and_the_job_runs_again(
    small_corpus: Corpus,
    settings,
    configure,
    moment: str,
) -> None:
    settings.TASKS = DATABASE_TASKS
    configure(JOB_AUTO_RETRIES=0)  # the admin runs it again (the automatic retry: tests/test_corpus_locks.py)
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)
    job = jobs.confirm_upload(upload_job(small_corpus, SMALL_FAQ[:5] + NEW_PAIRS, mode="replace"))
    assert job.status == "queued"
    process = start_worker("--batch", slow=True)
    try:
        if moment == "embedding":
            wait_for(lambda: IngestJob.objects.get(pk=job.pk).rows_embedded >= 16, process=process)
        else:  # the new index file is written and verified; the switch transaction is open
            wait_for(
                lambda: IngestJob.objects.get(pk=job.pk).stage == "indexing" and _new_index_file(live), process=process
            )
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    job.refresh_from_db()
    assert job.status == "running"  # as the dead worker left it...
    assert jobs.refresh_liveness(job).status == "interrupted"  # ...and as the admin sees it
    if connection.vendor == "postgresql":  # the server released the dead worker's corpus lock
        assert corpus_lock_free("small")
    assert small_corpus.pairs.count() == 10
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True) == live
    result = suggestions_for("cancel my plan", corpus="small")
    assert result.suggestions[0].question == "How do I cancel my subscription?"
    if moment == "indexing":  # the dead build's file is an orphan, cleaned up once stale
        assert _new_index_file(live)
        builds.remove_orphan_files(min_age_seconds=0)
        assert not _new_index_file(live)

    jobs.run_again(job)
    process = start_worker("--batch")
    assert process.wait(timeout=300) == 0, process.stderr.read().decode()[-3000:]  # type: ignore[union-attr]
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.attempts == 2 and job.report["removed"] == 5 and job.report["added"] == 40
    assert small_corpus.pairs.count() == 45
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True).vector_count == 45
    result = suggestions_for("configure widget option 7", corpus="small")
    assert "option number 7" in result.suggestions[0].question


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_queries_are_answered_from_the_old_or_the_new_index_while_a_job_runs(
    small_corpus: Corpus,
    configure,
) -> None:
    configure(EMBED_BATCH_SIZE=2)
    configure(JOB_BATCH_PAUSE_SECONDS=0.2)
    queries = ["reset my password", "widget option 3", "cancel", "how do I configure", "mobile app"]

    def answers() -> dict[str, tuple[int, ...]]:
        return {q: tuple(s.id for s in suggestions_for(q, corpus="small").suggestions) for q in queries}

    before = answers()
    job = upload_job(small_corpus, NEW_PAIRS)

    def confirm_then_close() -> None:
        jobs.confirm_upload(job)
        connection.close()

    runner = threading.Thread(target=confirm_then_close)
    seen: list[tuple[str, tuple[int, ...]]] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            while runner.is_alive():
                seen.extend(answers().items())
        except BaseException as exc:  # noqa: BLE001 - any failure to answer fails the test
            errors.append(exc)
        finally:
            connection.close()

    runner.start()
    readers = [threading.Thread(target=ask) for _ in range(3)]
    for reader in readers:
        reader.start()
    for thread in [runner, *readers]:
        thread.join(timeout=300)
    after = answers()
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert not errors, errors
    assert after != before and len(seen) >= 5 * len(queries)
    for query, ids in seen:
        assert ids in (before[query], after[query]), (query, ids)
    assert any(ids == before[q] != after[q] for q, ids in seen)  # the old index answered during the job


@pytest.mark.slow
@pytest.mark.django_db
def test_ivysaur_and_gist_small_indexes_side_by_side(
    admin_client: Client,
    settings,
    configure,
    random_model_dirs: dict[str, Path],
) -> None:
    # No hub here: both load from local directories, as in production (AUTOCOMPLETE_*_PATH).
    configure(
        ENCODERS={
            **settings.AUTOCOMPLETE["ENCODERS"],
            "ivysaur": {"PATH": str(random_model_dirs["ivysaur"])},
            "gist-small": {"PATH": str(random_model_dirs["gist-small"])},
        }
    )
    form = {
        "new_corpus_name": "Help",
        "new_corpus_slug": "help",
        "encoders": ["ivysaur", "gist-small"],
        "mode": "merge",
    }
    from django.core.files.uploadedfile import SimpleUploadedFile

    response = admin_client.post(
        "/admin/autocomplete/corpus/upload/", {**form, "file": SimpleUploadedFile("faq.csv", faq_csv())}
    )
    job = IngestJob.objects.get()
    admin_client.post(f"/admin/autocomplete/corpus/upload/{job.pk}/preview/", {"confirm": "1"})
    job.refresh_from_db()
    assert response.status_code == 302 and job.status == "succeeded", job.error
    assert sorted(b["encoder"] for b in job.report["indexes"]) == ["gist-small", "ivysaur"]
    corpus = Corpus.objects.get(slug="help")
    assert corpus.default_encoder == "ivysaur"
    assert sorted(IndexBuild.objects.filter(corpus=corpus, is_live=True).values_list("encoder", flat=True)) == [
        "gist-small",
        "ivysaur",
    ]
    for key in ("ivysaur", "gist-small"):
        body = admin_client.get("/api/suggest", {"q": "password", "corpus": "help", "encoder": key}).json()
        assert body["encoder"] == key and len(body["suggestions"]) > 0
    assert admin_client.get("/api/suggest", {"q": "password", "corpus": "help"}).json()["encoder"] == "ivysaur"
    page = admin_client.get("/", {"corpus": "help", "encoder": "gist-small"}).content.decode()
    assert '<select id="encoder" name="encoder">' in page
    assert '<option value="gist-small" selected>GIST-small</option>' in page and ">Ivysaur</option>" in page
    assert QAPair.objects.filter(corpus=corpus).count() == 10
