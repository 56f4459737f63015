"""One ingest per corpus at a time, enforced by the database: several real `db_worker` processes,
jobs of one corpus in line and of different corpora side by side, and a worker killed mid-job whose
corpus is freed and whose job completes by itself. These run on the suite's database: SQLite in
`make test`, PostgreSQL (the advisory locks) in `make test-postgres`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from autocomplete import jobs
from autocomplete.corpus_locks import corpus_lock, corpus_lock_free
from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus, IndexBuild, IngestJob
from autocomplete.parsing import parse_qa_file

from .conftest import SMALL_FAQ, faq_csv, held_by_another_session, start_worker

DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
# Enough to keep a throttled worker busy while another one starts (workers_env).
MANY_PAIRS = [(f"What does setting number {n} change?", f"Setting {n} changes part {n}.") for n in range(200)]
NEW_PAIRS = [(f"How do I turn on feature number {n}?", f"Switch feature {n} on in Settings.") for n in range(40)]


@pytest.fixture(autouse=True)
def _queued_jobs(configure, settings, tmp_path: Path) -> None:
    configure(UPLOAD_DIR=tmp_path / "uploads")
    settings.TASKS = DATABASE_TASKS  # jobs wait in the database for a worker


@pytest.fixture
def workers_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker subprocesses that take their time (so that jobs can be watched) and retry busy corpora soon."""
    monkeypatch.setenv("AUTOCOMPLETE_EMBED_BATCH_SIZE", "2")  # 16 texts per encoder call
    monkeypatch.setenv("AUTOCOMPLETE_JOB_BATCH_PAUSE_SECONDS", "0.4")
    monkeypatch.setenv("AUTOCOMPLETE_JOB_BUSY_RETRY_SECONDS", "0.3")


def upload(corpus: Corpus, pairs: list[tuple[str, str]], *, mode: str = "merge") -> IngestJob:
    preview = jobs.create_upload_preview(
        faq_csv(pairs), filename="more.csv", corpus=corpus, mode=mode, encoders=["minilm"]
    )
    return jobs.confirm_upload(preview)


def second_corpus() -> Corpus:
    corpus = Corpus.objects.create(name="Other FAQ", slug="other", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(faq_csv(SMALL_FAQ[5:]), filename="faq.csv"), encoder_key="minilm")
    return corpus


def fresh(job: IngestJob) -> IngestJob:
    job.refresh_from_db()
    return job


@pytest.fixture
def workers() -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Start real `manage.py db_worker` processes; each is killed at the end if still running."""
    started: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        process = start_worker("--interval", "0.1")
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def wait_for(condition: Callable[[], bool], *, timeout: float = 180, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def finished(*queued: IngestJob) -> Callable[[], bool]:
    return lambda: all(fresh(job).is_finished for job in queued)


# --- the lock itself ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_corpus_lock_is_held_by_one_session_and_freed_with_it(db: None) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's: run with AUTOCOMPLETE_TEST_DATABASE_URL (make test-postgres)")
    with held_by_another_session("small"):
        assert not corpus_lock_free("small")
        with corpus_lock("small") as held:
            assert not held  # never waits
        assert corpus_lock_free("other")  # other corpora are free
    assert corpus_lock_free("small")
    with corpus_lock("small") as held:
        assert held


# --- the line of one corpus, in this process ----------------------------------------------------


@contextmanager
def running_elsewhere(job: IngestJob) -> Iterator[None]:
    """The job running in another live process of this machine, which holds its corpus's lock on
    PostgreSQL, as a worker's job does; it ends when the block does."""
    worker = subprocess.Popen(["sleep", "120"])
    IngestJob.objects.filter(pk=job.pk).update(
        status="running", worker_host=socket.gethostname(), worker_pid=worker.pid, heartbeat_at=timezone.now()
    )
    try:
        if connection.vendor == "postgresql":
            with held_by_another_session(job.corpus_label):
                yield
        else:
            yield
    finally:
        IngestJob.objects.filter(pk=job.pk).update(status="succeeded", finished_at=timezone.now())
        worker.kill()
        worker.wait()


@pytest.mark.django_db
def test_a_job_waits_for_the_running_job_of_its_corpus_then_runs(small_corpus: Corpus) -> None:
    first, second = upload(small_corpus, NEW_PAIRS[:3]), upload(small_corpus, NEW_PAIRS[3:6])
    task_before = second.task_id
    with running_elsewhere(first):
        assert jobs.execute_job(second.pk) == "queued"
        second = fresh(second)
        assert second.status == "queued" and second.stage == jobs.WAITING_STAGE and second.attempts == 0
        retry = jobs.run_job.get_backend().get_result(second.task_id)
        assert second.task_id != task_before and retry.status == "READY"  # tried again later, by any worker
        assert DBTaskResult.objects.get(id=second.task_id).run_after > timezone.now()
        assert small_corpus.pairs.count() == 10  # nothing of it applied
        assert fresh(first).status == "running"
    assert jobs.execute_job(second.pk) == "succeeded"
    assert small_corpus.pairs.count() == 13


@pytest.mark.django_db
def test_without_a_queue_a_job_waits_in_place_then_gives_up_in_words(small_corpus: Corpus, settings, configure) -> None:
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    configure(JOB_STALE_SECONDS=0.5, JOB_BUSY_RETRY_SECONDS=0.1)
    first = upload(small_corpus, NEW_PAIRS[:3])  # runs at once: nothing else on the corpus
    assert first.status == "succeeded"
    preview = jobs.create_upload_preview(
        faq_csv(NEW_PAIRS[3:6]), filename="more.csv", corpus=small_corpus, mode="merge", encoders=["minilm"]
    )
    with running_elsewhere(first):
        started = time.monotonic()
        second = jobs.confirm_upload(preview)
        assert 0.5 <= time.monotonic() - started < 10
    assert second.status == "failed" and "Run this job again once that one has finished" in second.error
    assert small_corpus.pairs.count() == 13


@pytest.mark.django_db
def test_jobs_of_one_corpus_run_in_the_order_they_were_queued(small_corpus: Corpus) -> None:
    other = second_corpus()
    first, second = upload(small_corpus, NEW_PAIRS[:3], mode="replace"), upload(small_corpus, NEW_PAIRS[3:6])
    elsewhere = upload(other, NEW_PAIRS[6:9])
    # A worker that picks the later job first leaves it queued: the earlier one's task will run.
    assert jobs.execute_job(second.pk) == "queued"
    assert jobs.execute_job(elsewhere.pk) == "succeeded"  # another corpus is not in this line
    assert jobs.execute_job(first.pk) == "succeeded"
    assert jobs.execute_job(second.pk) == "succeeded"
    # In order: the replace left 3 pairs, then the merge added 3 (the other way round: 3 pairs).
    assert small_corpus.pairs.count() == 6
    assert fresh(first).finished_at <= fresh(second).started_at  # type: ignore[operator]


@pytest.mark.django_db
def test_a_job_whose_task_is_lost_does_not_block_its_corpus(small_corpus: Corpus) -> None:
    lost, later = upload(small_corpus, NEW_PAIRS[:3]), upload(small_corpus, NEW_PAIRS[3:6])
    assert jobs.run_job.get_backend().get_result(lost.task_id).status == "READY"  # it exists...
    DBTaskResult.objects.filter(id=lost.task_id).delete()  # ...until the task table is pruned
    assert jobs.execute_job(later.pk) == "succeeded"
    assert fresh(lost).status == "queued"  # still there for an admin to cancel


@pytest.mark.django_db
def test_a_job_found_interrupted_is_queued_again_in_its_place(small_corpus: Corpus, configure) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    interrupted, later = upload(small_corpus, NEW_PAIRS[:3]), upload(small_corpus, NEW_PAIRS[3:6])
    IngestJob.objects.filter(pk=interrupted.pk).update(
        status="running", stage="embedded", attempts=1, worker_host=os.uname().nodename, worker_pid=gone.pid
    )
    # The later job's worker finds the dead one, which goes back to the head of the line.
    assert jobs.execute_job(later.pk) == "queued"
    interrupted = fresh(interrupted)
    assert interrupted.status == "queued" and interrupted.attempts == 1 and interrupted.error == ""
    assert jobs.execute_job(interrupted.pk) == "succeeded"
    assert jobs.execute_job(later.pk) == "succeeded"
    assert fresh(interrupted).attempts == 2
    # Its retries spent (AUTOCOMPLETE_JOB_AUTO_RETRIES), a job stays interrupted for an admin.
    configure(JOB_AUTO_RETRIES=0)
    IngestJob.objects.filter(pk=interrupted.pk).update(status="running", worker_pid=gone.pid)
    assert jobs.refresh_liveness(fresh(interrupted)).status == "interrupted"


@pytest.mark.django_db
def test_any_job_that_starts_finds_a_dead_job_of_another_corpus_and_queues_it_again(small_corpus: Corpus) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan, unrelated = upload(second_corpus(), NEW_PAIRS[:3]), upload(small_corpus, NEW_PAIRS[3:6])
    IngestJob.objects.filter(pk=orphan.pk).update(
        status="running", stage="embedded", attempts=1, worker_host=socket.gethostname(), worker_pid=gone.pid
    )
    assert jobs.execute_job(unrelated.pk) == "succeeded"
    orphan = fresh(orphan)
    assert orphan.status == "queued" and jobs.run_job.get_backend().get_result(orphan.task_id).status == "READY"
    assert jobs.execute_job(orphan.pk) == "succeeded"


# --- real worker processes ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_workers_run_two_jobs_of_one_corpus_one_after_the_other(
    small_corpus: Corpus, workers_env: None, workers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    first = upload(small_corpus, SMALL_FAQ[:5] + MANY_PAIRS, mode="replace")
    second = upload(small_corpus, NEW_PAIRS)
    processes = [workers(), workers()]
    # The worker that does not take the first job takes the second and leaves it queued. The first may
    # not be running yet when that happens (its worker can find the corpus lock held by the other for a
    # moment and try again shortly), but it starts before the second, which keeps waiting meanwhile.
    wait_for(lambda: fresh(second).stage == jobs.WAITING_STAGE, what="the second job to wait its turn")
    wait_for(lambda: fresh(first).status != "queued", what="the first job to start")
    assert fresh(second).status == "queued"
    wait_for(finished(first, second), what="both jobs")
    first, second = fresh(first), fresh(second)
    assert (first.status, second.status) == ("succeeded", "succeeded"), (first.error, second.error)
    assert first.finished_at and second.started_at and first.finished_at <= second.started_at
    assert small_corpus.pairs.count() == 245  # the replace, then the merge: in the order queued
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True).vector_count == 245
    assert all(process.poll() is None for process in processes)  # waiting is not failing


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_workers_run_jobs_of_two_corpora_side_by_side(
    small_corpus: Corpus, workers_env: None, workers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    other = second_corpus()
    here, there = upload(small_corpus, NEW_PAIRS), upload(other, NEW_PAIRS)
    workers(), workers()
    wait_for(finished(here, there), what="both jobs")
    here, there = fresh(here), fresh(there)
    assert (here.status, there.status) == ("succeeded", "succeeded"), (here.error, there.error)
    assert here.started_at and here.finished_at and there.started_at and there.finished_at
    assert here.started_at < there.finished_at and there.started_at < here.finished_at  # they overlapped
    assert here.worker_pid != there.worker_pid
    assert (small_corpus.pairs.count(), other.pairs.count()) == (50, 45)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_embedding_frees_the_corpus_and_its_job_completes_by_itself(
    small_corpus: Corpus, workers_env: None, workers: Callable[[], subprocess.Popen[bytes]]
) -> None:
    killed = upload(small_corpus, SMALL_FAQ[:5] + MANY_PAIRS, mode="replace")
    processes = {process.pid: process for process in (workers(), workers())}
    wait_for(lambda: fresh(killed).rows_embedded >= 16, what="the first job to embed")
    behind = upload(small_corpus, [(q, a + " (edited)") for q, a in SMALL_FAQ[:2]])
    wait_for(lambda: fresh(behind).stage == jobs.WAITING_STAGE, what="the other worker to leave the job queued")
    killed = fresh(killed)
    assert killed.status == "running" and fresh(behind).status == "queued" and killed.rows_embedded < 200
    if connection.vendor == "postgresql":
        assert not corpus_lock_free("small")

    doomed = processes[killed.worker_pid]  # type: ignore[index]
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(timeout=30)
    if connection.vendor == "postgresql":  # the server frees the dead session's lock
        wait_for(lambda: corpus_lock_free("small"), timeout=10, what="the lock to be released")
    # The other worker finds the dead job, queues it again at the head of the line and runs it,
    # then the job queued behind it: no admin involved (AUTOCOMPLETE_JOB_AUTO_RETRIES).
    wait_for(finished(killed, behind), what="both jobs")
    killed, behind = fresh(killed), fresh(behind)
    assert (killed.status, behind.status) == ("succeeded", "succeeded"), (killed.error, behind.error)
    assert killed.attempts == 2 and behind.attempts == 1
    assert killed.finished_at and behind.started_at and killed.finished_at <= behind.started_at
    assert killed.report["removed"] == 5 and killed.report["added"] == 200 and behind.report["updated"] == 2
    assert small_corpus.pairs.count() == 205
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True).vector_count == 205
