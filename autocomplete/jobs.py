"""Background ingestion jobs: preview, enqueue, run with progress, cancel, detect interruption, run again.

A job runs through Django's tasks API (`django_tasks`; the database backend in deployment, so
`manage.py db_worker` on any machine sharing the database runs it). Its work is `ingest.py`'s:
embeddings first, outside any transaction, then the pair changes and the new live indexes in one
transaction. A job that fails, is cancelled or is killed therefore leaves the previous pairs and
live indexes serving, and running it again completes it.

Jobs of one corpus run one at a time, in the order they were queued (corpus_locks.py); a job whose
corpus is busy stays queued and its task is tried again later, leaving the worker to other corpora.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone
from django_tasks import TaskResultStatus, task
from django_tasks.exceptions import TaskResultDoesNotExist

from .builds import IndexWriteError, remove_orphan_files
from .conf import app_settings
from .corpus_locks import corpus_lock, corpus_lock_free, uses_advisory_locks
from .ingest import Plan, ingest_mode, ingest_parsed, plan_ingest, reindex, withheld_removal_note
from .models import Corpus, IngestJob, QueryEncoder
from .parsing import FIELD_ALIASES, ParsedFile, parse_qa_file
from .query_encoders import changed_enough, train_for_corpus
from .uploads import delete_upload, read_upload, remove_stale_temp_files, remove_stale_uploads, store_upload

logger = logging.getLogger(__name__)

Status = IngestJob.Status
PREVIEW_ROWS = 5
REPORTED_REJECTIONS = 1000  # a file of 100,000 bad rows would otherwise make a huge report
PROGRESS_WRITE_SECONDS = 0.5
WAITING_STAGE = "waiting for another job on this corpus"
# Jobs this process is running, in any thread: what its own pid cannot tell.
_RUNNING_HERE: set[int] = set()


class JobCancelledError(Exception):
    """Raised between batches when an admin asked for the job to stop."""


class JobStateError(ValueError):
    """The job is not in a state that allows what was asked."""


# --- creating jobs -----------------------------------------------------------------------------


def create_upload_preview(
    data: bytes,
    *,
    filename: str,
    corpus: Corpus | None,
    new_corpus_name: str = "",
    new_corpus_slug: str = "",
    mode: str,
    encoders: list[str],
    user: Any = None,
) -> IngestJob:
    """Parse and plan an upload without touching the corpus; keep the file for the job.

    Raises ParseError for a file refused as a whole, in which case nothing is stored.
    """
    parsed = parse_qa_file(data, filename=filename)
    target = corpus or Corpus(name=new_corpus_name, slug=new_corpus_slug)
    plan = plan_ingest(target, parsed, mode=ingest_mode(mode))
    return IngestJob.objects.create(
        kind=IngestJob.Kind.UPLOAD,
        corpus=corpus,
        new_corpus_name=new_corpus_name,
        new_corpus_slug=new_corpus_slug,
        mode=mode,
        encoders=encoders,
        original_name=filename[:255],
        stored_file=store_upload(data),
        file_format=parsed.format,
        preview=preview_of(parsed, plan),
        status=Status.PREVIEW,
        created_by=user if getattr(user, "pk", None) else None,
    )


def preview_of(parsed: ParsedFile, plan: Plan) -> dict[str, Any]:
    """What the admin confirms: format, column mapping, first rows and the counts of changes."""
    return {
        "format": parsed.format,
        "columns": parsed.columns or _json_columns(),
        "first_rows": [
            {"line": row.line, "question": row.question, "answer": row.answer[:300]}
            for row in parsed.rows[:PREVIEW_ROWS]
        ],
        "rows": len(parsed.rows),
        "added": len(plan.to_add),
        "updated": len(plan.to_update),
        "unchanged": plan.unchanged,
        "removed": len(plan.to_remove),
        "rejected_count": len(plan.rejected),
        "rejected": _rejections(plan),
        "removal_note": withheld_removal_note(plan.unreadable_rows, done=False),
    }


def _json_columns() -> dict[str, str]:
    # JSON objects are matched key by key, each by any alias of the field.
    return {name: " / ".join(FIELD_ALIASES[name]) for name in ("question", "answer")}


def _rejections(plan: Plan) -> list[dict[str, Any]]:
    return [{"line": r.line, "reason": r.reason} for r in plan.rejected[:REPORTED_REJECTIONS]]


def confirm_upload(job: IngestJob) -> IngestJob:
    """The admin confirmed the preview: queue the job."""
    if job.status != Status.PREVIEW:
        raise JobStateError(f"Job {job.pk} is {job.get_status_display().lower()}, not awaiting confirmation.")
    return _enqueue(job)


def discard_preview(job: IngestJob) -> None:
    """The admin cancelled at the preview: forget the file; nothing was written."""
    if job.status != Status.PREVIEW:
        raise JobStateError(f"Job {job.pk} is {job.get_status_display().lower()}, not awaiting confirmation.")
    delete_upload(job.stored_file)
    _finish(job, Status.CANCELLED, stored_file="", error="Cancelled at the preview; nothing was written.")


def create_reindex_job(corpus: Corpus, *, encoder: str, user: Any = None) -> IngestJob:
    """Queue a rebuild of the corpus's index for one encoder."""
    return _enqueue_for_encoder(IngestJob.Kind.REINDEX, corpus, encoder=encoder, user=user)


def create_query_encoder_job(corpus: Corpus, *, encoder: str, user: Any = None) -> IngestJob:
    """Queue training a query encoder for the corpus's `encoder` index (autocomplete/query_encoders.py)."""
    return _enqueue_for_encoder(IngestJob.Kind.QUERY_ENCODER, corpus, encoder=encoder, user=user)


def _enqueue_for_encoder(kind: str, corpus: Corpus, *, encoder: str, user: Any) -> IngestJob:
    job = IngestJob.objects.create(
        kind=kind,
        corpus=corpus,
        encoders=[encoder],
        status=Status.PREVIEW,
        created_by=user if getattr(user, "pk", None) else None,
    )
    return _enqueue(job)


def run_again(job: IngestJob) -> IngestJob:
    """Queue a failed or interrupted job once more; it starts from its stored file."""
    refresh_liveness(job)
    if job.status not in (Status.FAILED, Status.INTERRUPTED):
        raise JobStateError(f"Only failed or interrupted jobs run again; job {job.pk} is {job.status}.")
    if job.kind == IngestJob.Kind.UPLOAD and not job.stored_file:
        raise JobStateError(f"The file of job {job.pk} is gone; upload it again.")
    return _enqueue(job)


def request_cancel(job: IngestJob) -> IngestJob:
    """Stop a queued job now, or ask a running one to stop at its next batch."""
    refresh_liveness(job)
    if job.status == Status.QUEUED:
        # Only if a worker has not claimed it in the meantime.
        if IngestJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
            status=Status.CANCELLED, finished_at=timezone.now(), error="Cancelled before it started."
        ):
            delete_upload(job.stored_file)
            IngestJob.objects.filter(pk=job.pk).update(stored_file="")
    elif job.status == Status.RUNNING:
        IngestJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    else:
        raise JobStateError(f"Job {job.pk} is {job.get_status_display().lower()}; there is nothing to cancel.")
    job.refresh_from_db()
    return job


def _enqueue(job: IngestJob, *, keep_place: bool = False) -> IngestJob:
    """Queue the job: last in its corpus's line, or where it stood when `keep_place` (a retry)."""
    IngestJob.objects.filter(pk=job.pk).update(
        status=Status.QUEUED,
        stage="queued",
        queued_at=F("queued_at") if keep_place else Now(),
        cancel_requested=False,
        error="",
        report={},
        rows_parsed=0,
        rows_total=0,
        rows_embedded=0,
        embed_total=0,
        rows_indexed=0,
        index_total=0,
        started_at=None,
        finished_at=None,
        worker_pid=None,
        worker_host="",
        heartbeat_at=None,
    )
    result = run_job.enqueue(job.pk)
    # With the immediate backend the job has already run; never overwrite what it recorded.
    IngestJob.objects.filter(pk=job.pk).update(task_id=str(result.id))
    job.refresh_from_db()
    return job


# --- running jobs ------------------------------------------------------------------------------


@task()
def run_job(job_id: int) -> str:
    """The task a worker runs: one ingest job, start to finish. Returns the final status."""
    return execute_job(job_id)


def execute_job(job_id: int) -> str:
    """Run a queued job in this process when its corpus is free, recording progress, outcome and
    report on the job; otherwise leave it queued, to be tried again. Returns the job's status."""
    waiting_since = time.monotonic()
    while True:
        job = IngestJob.objects.select_related("corpus").filter(pk=job_id).first()
        if job is None:  # its corpus was deleted
            return "deleted"
        if job.status != Status.QUEUED:  # cancelled while queued, or run by another worker
            return str(job.status)
        # Training a query encoder writes neither pairs nor index builds, so it is no ingest: it runs
        # beside them without the corpus's lock (an upload queues it while holding that lock).
        exclusive = job.kind != IngestJob.Kind.QUERY_ENCODER
        with corpus_lock(job.corpus_label) if exclusive else nullcontext(True) as held:
            if held:
                # Before the claim, so that no other thread of this process finds the job orphaned.
                _RUNNING_HERE.add(job_id)
                try:
                    if _claim(job):
                        return _run(IngestJob.objects.get(pk=job_id))
                finally:
                    _RUNNING_HERE.discard(job_id)
        if run_job.get_backend().supports_defer:
            return _wait_turn(job)
        # Without a queue to come back through (the immediate backend runs jobs inside the
        # request), wait here, for as long as a worker may go unheard of.
        if time.monotonic() - waiting_since > app_settings().job_stale_seconds:
            return _give_up_waiting(job)
        time.sleep(app_settings().job_busy_retry_seconds)


def _give_up_waiting(job: IngestJob) -> str:
    IngestJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        status=Status.FAILED,
        finished_at=timezone.now(),
        error=f"Another job on corpus '{job.corpus_label}' ran for longer than this one could wait; nothing "
        "was written. Run this job again once that one has finished.",
    )
    return IngestJob.objects.filter(pk=job.pk).values_list("status", flat=True).first() or "deleted"


def _claim(job: IngestJob) -> bool:
    """Mark the job running if no other job of its corpus runs or stands before it in line.

    Under the corpus lock on PostgreSQL; in a write transaction, which SQLite serialises, elsewhere.
    """
    with transaction.atomic():
        if job.kind != IngestJob.Kind.QUERY_ENCODER and _corpus_busy(job):
            return False
        return bool(
            IngestJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
                status=Status.RUNNING,
                stage="starting",
                started_at=timezone.now(),
                heartbeat_at=timezone.now(),
                worker_host=socket.gethostname()[:255],
                worker_pid=os.getpid(),
                attempts=F("attempts") + 1,
            )
        )


def _corpus_busy(job: IngestJob) -> bool:
    label = job.corpus_label
    same_corpus = (
        IngestJob.objects.filter(Q(corpus__slug=label) | Q(corpus__isnull=True, new_corpus_slug=label))
        .exclude(pk=job.pk)
        .exclude(kind=IngestJob.Kind.QUERY_ENCODER)
        .select_related("corpus")
    )
    # A running job whose worker is gone is marked interrupted here (and perhaps queued again).
    for other in same_corpus.filter(status=Status.RUNNING):
        if refresh_liveness(other).status == Status.RUNNING:
            return True
    if job.queued_at is None:  # queued before jobs had places in line
        return False
    ahead = same_corpus.filter(status=Status.QUEUED).filter(
        Q(queued_at__lt=job.queued_at) | Q(queued_at=job.queued_at, pk__lt=job.pk)
    )
    return any(_task_pending(other) for other in ahead)


def _task_pending(job: IngestJob) -> bool:
    """Whether a queued job will be run by its task: a job whose task is lost must not block the line."""
    backend = run_job.get_backend()
    if not backend.supports_get_result:  # the immediate backend keeps no queue
        return False
    try:
        result = backend.get_result(job.task_id)
    except (TaskResultDoesNotExist, ImportError):  # pruned, or a task no worker can import
        return False
    if result.status == TaskResultStatus.READY:
        return True
    # A worker is deciding whether it may start the job, a moment's work; a worker killed at that
    # moment leaves its task running for ever, so only a recent start counts.
    stale = timedelta(seconds=app_settings().job_stale_seconds)
    started = result.started_at
    return result.status == TaskResultStatus.RUNNING and started is not None and timezone.now() - started < stale


def _wait_turn(job: IngestJob) -> str:
    """Leave the job queued and its task to be tried again shortly, by any worker."""
    if not IngestJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(stage=WAITING_STAGE):
        return IngestJob.objects.filter(pk=job.pk).values_list("status", flat=True).first() or "deleted"
    later = timezone.now() + timedelta(seconds=app_settings().job_busy_retry_seconds)
    result = run_job.using(run_after=later).enqueue(job.pk)
    IngestJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(task_id=str(result.id))
    return Status.QUEUED


def _run(job: IngestJob) -> str:
    """The job's work, once this worker has claimed it."""
    job_id = job.pk
    tracker = ProgressTracker(job)
    started = time.monotonic()
    try:
        cleanup_stale_files()
        report = _RUNNERS[IngestJob.Kind(job.kind)](job, tracker)
    except JobCancelledError:
        tracker.flush(check_cancel=False)
        delete_upload(job.stored_file)
        _finish(job, Status.CANCELLED, stored_file="", error="Cancelled; the corpus and its live index are as before.")
        return Status.CANCELLED
    except Exception as exc:
        logger.exception("Ingest job %s failed", job_id)
        tracker.flush(check_cancel=False)
        _finish(
            job,
            Status.FAILED,
            error=f"{_failure_text(exc)} The corpus and its live index are as before; fix the cause and run "
            "the job again.",
        )
        return Status.FAILED
    report["duration_seconds"] = round(time.monotonic() - started, 2)
    tracker.flush(check_cancel=False)
    delete_upload(job.stored_file)
    _finish(job, Status.SUCCEEDED, stored_file="", report=report, stage="done")
    return Status.SUCCEEDED


def _failure_text(exc: Exception) -> str:
    """Why a job failed, for the admin: an error that explains itself as it is, any other with its kind."""
    if isinstance(exc, IndexWriteError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}."


def _run_upload(job: IngestJob, tracker: ProgressTracker) -> dict[str, Any]:
    """An upload, then training its live query encoders again when it changed the corpus enough."""
    report = _ingest_upload(job, tracker)
    changed = report["added"] + report["updated"] + report["removed"]
    corpus = Corpus.objects.filter(jobs__pk=job.pk).first()  # set by the ingest for a new corpus
    if corpus is not None and changed_enough(corpus, changed):
        live = QueryEncoder.objects.filter(corpus=corpus, is_live=True).values_list("encoder", flat=True)
        report["query_encoder_jobs"] = [
            create_query_encoder_job(corpus, encoder=key, user=job.created_by).pk for key in sorted(live)
        ]
    return report


def _ingest_upload(job: IngestJob, tracker: ProgressTracker) -> dict[str, Any]:
    parsed = parse_qa_file(read_upload(job.stored_file), filename=job.original_name)
    tracker("parsed", len(parsed.rows) + len(parsed.rejected), len(parsed.rows) + len(parsed.rejected))
    corpus = job.corpus or Corpus.objects.filter(slug=job.new_corpus_slug).first()
    if corpus is None:
        corpus = Corpus(name=job.new_corpus_name, slug=job.new_corpus_slug, default_encoder=job.encoders[0])
    report = ingest_parsed(
        corpus,
        parsed,
        encoder_keys=job.encoders,
        mode=ingest_mode(job.mode),
        progress=tracker,
    )
    IngestJob.objects.filter(pk=job.pk).update(corpus=corpus)
    return {
        "format": report.format,
        "encoders": report.encoders,
        "added": report.added,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "removed": report.removed,
        "rejected_count": len(report.rejected),
        "removal_note": report.removal_note,
        "embedded": report.embedded,
        "reused": report.reused,
        "rejected": [{"line": r.line, "reason": r.reason} for r in report.rejected[:REPORTED_REJECTIONS]],
        "indexes": [{"encoder": b.encoder, "vectors": b.vector_count, "kind": b.kind} for b in report.index_builds],
    }


def _run_reindex(job: IngestJob, tracker: ProgressTracker) -> dict[str, Any]:
    assert job.corpus is not None
    build = reindex(job.corpus, encoder_key=job.encoders[0], progress=tracker)
    return {
        "encoders": [build.encoder],
        "indexes": [{"encoder": build.encoder, "vectors": build.vector_count, "kind": build.kind}],
    }


def _run_query_encoder(job: IngestJob, tracker: ProgressTracker) -> dict[str, Any]:
    assert job.corpus is not None
    record = train_for_corpus(job.corpus, encoder_key=job.encoders[0], progress=tracker)
    return {
        "encoders": [record.encoder],
        "query_encoder": {
            "questions": record.questions,
            "steps": record.steps,
            "loss_before": record.loss_before,
            "loss_after": record.loss_after,
            "identity_cosine": record.identity_cosine,
        },
    }


_RUNNERS = {
    IngestJob.Kind.UPLOAD: _run_upload,
    IngestJob.Kind.REINDEX: _run_reindex,
    IngestJob.Kind.QUERY_ENCODER: _run_query_encoder,
}


def _finish(job: IngestJob, status: str, **fields: Any) -> None:
    IngestJob.objects.filter(pk=job.pk).update(status=status, finished_at=timezone.now(), **fields)


class ProgressTracker:
    """The progress callback handed to ingest: throttled writes, heartbeat, cancel checks, pause."""

    _COUNTERS = {
        "parsed": ("rows_parsed", "rows_total"),
        "embedded": ("rows_embedded", "embed_total"),
        "indexing": ("rows_indexed", "index_total"),
        "indexed": ("rows_indexed", "index_total"),
        # A query encoder's training steps count where an upload's indexed rows do.
        "training": ("rows_indexed", "index_total"),
    }

    def __init__(self, job: IngestJob) -> None:
        self.job_id = job.pk
        self.fields: dict[str, Any] = {}
        self.last_write = 0.0
        # Transactions opened after this point are ingest's own (the caller may hold one already).
        self.base_depth = len(connection.atomic_blocks)

    def __call__(self, stage: str, done: int, total: int) -> None:
        done_field, total_field = self._COUNTERS.get(stage, ("", ""))
        stage_changed = self.fields.get("stage") != stage
        self.fields["stage"] = stage
        if done_field:
            self.fields[done_field], self.fields[total_field] = done, total
        if stage_changed or time.monotonic() - self.last_write >= PROGRESS_WRITE_SECONDS:
            self.flush()
        pause = app_settings().job_batch_pause_seconds
        if pause:
            time.sleep(pause)

    def flush(self, *, check_cancel: bool = True) -> None:
        """Write the counters and heartbeat, then honour a cancel request."""
        if len(connection.atomic_blocks) > self.base_depth:
            # Inside the final transaction: a write would hold the job row's lock (and be invisible
            # until commit anyway), and stopping now would roll back work that is nearly done.
            return
        self.last_write = time.monotonic()
        IngestJob.objects.filter(pk=self.job_id).update(heartbeat_at=timezone.now(), **self.fields)
        if check_cancel and IngestJob.objects.filter(pk=self.job_id, cancel_requested=True).exists():
            raise JobCancelledError


# --- what the admin sees -------------------------------------------------------------------------


def refresh_liveness(job: IngestJob) -> IngestJob:
    """Mark a running job whose worker is gone (killed, crashed, machine lost) as interrupted, and
    queue it again in its place while it has automatic retries left (AUTOCOMPLETE_JOB_AUTO_RETRIES)."""
    if job.status == Status.RUNNING and not _worker_alive(job):
        updated = IngestJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(
            status=Status.INTERRUPTED,
            finished_at=timezone.now(),
            error=f"The worker stopped during '{job.stage}' (killed or crashed). Nothing was lost: the "
            "corpus and its live index are as before. Run the job again to complete it.",
        )
        if updated:
            logger.warning("Ingest job %s was interrupted during %s", job.pk, job.stage)
            job.refresh_from_db()
            if _retries_by_itself(job):
                logger.warning("Ingest job %s is queued again (attempt %s)", job.pk, job.attempts + 1)
                _enqueue(job, keep_place=True)
        job.refresh_from_db()
    return job


def _retries_by_itself(job: IngestJob) -> bool:
    # Only through a real queue: the immediate backend would run the job inside whoever noticed.
    return (
        job.attempts <= app_settings().job_auto_retries
        and run_job.get_backend().supports_defer
        and (job.kind == IngestJob.Kind.REINDEX or bool(job.stored_file))
    )


def refresh_running_jobs(jobs: QuerySet[IngestJob]) -> None:
    """refresh_liveness() for the running jobs among `jobs`, before a list of them is shown."""
    for job in jobs.filter(status=Status.RUNNING):
        refresh_liveness(job)


def _worker_alive(job: IngestJob) -> bool:
    same_host = job.worker_host == socket.gethostname() and bool(job.worker_pid)
    if same_host and job.worker_pid == os.getpid():
        return job.pk in _RUNNING_HERE  # a live process may still have lost the job (its thread died)
    if uses_advisory_locks():
        # Any other process, on any machine: its connection holds the corpus lock while the job runs.
        return not corpus_lock_free(job.corpus_label)
    if same_host:
        try:
            os.kill(job.worker_pid, 0)  # type: ignore[arg-type]
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    # Another machine, and no lock to ask: trust the heartbeat.
    stale = timedelta(seconds=app_settings().job_stale_seconds)
    return job.heartbeat_at is not None and timezone.now() - job.heartbeat_at < stale


@dataclass(frozen=True)
class JobProgress:
    percent: int
    elapsed_seconds: float
    remaining_seconds: float | None


# Rough shares of the work: parsing is quick, embedding dominates, indexing is in between.
_WEIGHTS = (
    ("rows_parsed", "rows_total", 0.1),
    ("rows_embedded", "embed_total", 0.7),
    ("rows_indexed", "index_total", 0.2),
)


def job_progress(job: IngestJob) -> JobProgress:
    """Percent done, elapsed time and an estimate of the time left."""
    if job.status == Status.SUCCEEDED:
        fraction = 1.0
    elif job.kind == IngestJob.Kind.QUERY_ENCODER:
        # Embedding the corpus (mostly stored vectors) is quick beside the training steps.
        fraction = 0.05 * _share(job.rows_embedded, job.embed_total) + 0.95 * _share(job.rows_indexed, job.index_total)
    else:
        fraction = 0.0
        for done_field, total_field, weight in _WEIGHTS:
            total = getattr(job, total_field)
            done = getattr(job, done_field)
            if total:
                fraction += weight * min(done / total, 1.0)
            elif done_field == "rows_embedded" and job.stage in ("indexing", "indexed"):
                fraction += weight  # nothing needed embedding
    end = job.finished_at or timezone.now()
    elapsed = (end - job.started_at).total_seconds() if job.started_at else 0.0
    remaining = None
    if job.status == Status.RUNNING and 0.05 < fraction < 1:
        remaining = elapsed * (1 - fraction) / fraction
    return JobProgress(
        int(fraction * 100 + 1e-9), round(elapsed, 1), None if remaining is None else round(remaining, 1)
    )


def _share(done: int, total: int) -> float:
    return min(done / total, 1.0) if total else 0.0


# --- housekeeping --------------------------------------------------------------------------------


def cleanup_stale_files() -> None:
    """Remove temp index files of crashed builds, uploads no job will read again and temp files of
    uploads whose request was killed; find running jobs whose worker is gone (and retry them)."""
    refresh_running_jobs(IngestJob.objects.select_related("corpus"))
    remove_orphan_files()
    ttl = app_settings().preview_ttl_seconds
    expired = IngestJob.objects.filter(status=Status.PREVIEW, created_at__lt=timezone.now() - timedelta(seconds=ttl))
    expired.update(status=Status.CANCELLED, stored_file="", error="Preview expired without confirmation.")
    keep = set(IngestJob.objects.exclude(stored_file="").values_list("stored_file", flat=True))
    remove_stale_uploads(keep, min_age_seconds=ttl)
    remove_stale_temp_files(min_age_seconds=ttl)
