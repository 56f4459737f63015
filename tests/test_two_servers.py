"""Two gunicorn servers and a separate `manage.py db_worker`, sharing PostgreSQL, Redis and one index
storage: while a client types against both servers, an upload through the worker changes a known
query's answer; both servers serve the new index within the catalog interval and no request fails.

Runs in the PostgreSQL pass (`make test-postgres`, `.ci/run`) where Redis answers on 127.0.0.1:6379;
the database is pytest-django's test database (test_<name>), created and dropped by it.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from autocomplete import jobs
from autocomplete.conf import app_settings
from autocomplete.ingest import ingest_parsed
from autocomplete.measure.benchmark import CORPUS_SLUG, free_port, stack_env
from autocomplete.measure.loadtest import suggest_path
from autocomplete.models import Corpus, IndexBuild, IngestJob
from autocomplete.parsing import parse_qa_file
from embeddings.encoders import Encoder

from .conftest import SMALL_FAQ, database_env, faq_csv

REDIS = ("127.0.0.1", 6379)
CATALOG_TTL_SECONDS = 2.0
QUERY = "configure widget option 7"
NEW_ANSWER = "How do I configure option number 7 of the widget?"
NEW_PAIRS = [(f"How do I configure option number {n} of the widget?", f"Set widget option {n}.") for n in range(8)]
DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


def _redis_answers() -> bool:
    try:
        socket.create_connection(REDIS, timeout=1).close()
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        settings.DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql",
        reason="needs PostgreSQL: run with AUTOCOMPLETE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test "
        "(make test-postgres)",
    ),
    pytest.mark.skipif(not _redis_answers(), reason="needs Redis on 127.0.0.1:6379, which does not answer"),
    pytest.mark.django_db(transaction=True),  # the servers and the worker read what this test commits
]


@dataclass
class Tally:
    """Every request a typist made: (wall-clock time, status, top question of the whole query, else None)."""

    requests: list[tuple[float, int, str | None]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def typist(port: int, stop: threading.Event, tally: Tally) -> None:
    """Types QUERY keystroke by keystroke, over and over, as a visitor does."""
    while not stop.is_set():
        for end in range(1, len(QUERY) + 1):
            try:
                status, body = get(port, suggest_path(QUERY[:end], corpus=CORPUS_SLUG))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                tally.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            suggestions = body.get("suggestions") or []
            top = None if end < len(QUERY) else str(suggestions[0]["question"]) if suggestions else ""
            tally.requests.append((time.time(), status, top))
            if status != 200:
                tally.failures.append(f"HTTP {status}: {body}")


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
            raise AssertionError(f"{what} did not happen within {timeout} s\n{tails}")
        time.sleep(0.1)


def answers(port: int) -> bool:
    try:
        return get(port, suggest_path("warm", corpus=CORPUS_SLUG))[0] == 200
    except (OSError, http.client.HTTPException, ValueError):
        return False


@pytest.fixture
def deployment(tmp_path: Path, configure: Callable[..., None], minilm: Encoder) -> Iterator[dict[str, Any]]:
    """Two servers and a worker, each with its own var directory, sharing the database, Redis and storage.

    `minilm` first: its ONNX export, shared with the subprocesses, is then made once, by this process.
    """
    shared = tmp_path / "index-storage"
    # This process writes the first build in place; the servers and the worker see the directory only
    # through a storage without local paths, as they would see S3.
    configure(INDEX_DIR=shared, UPLOAD_DIR=tmp_path / "uploads")
    corpus = Corpus.objects.create(name="Help", slug=CORPUS_SLUG, default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(faq_csv(SMALL_FAQ), filename="faq.csv"), encoder_key="minilm")
    storage = {"BACKEND": "tests.shared_storage.SharedDirectoryStorage", "OPTIONS": {"location": str(shared)}}
    common = {
        "DATABASE_URL": database_env()["AUTOCOMPLETE_TEST_DATABASE_URL"],
        "REDIS_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0",
        "AUTOCOMPLETE_INDEX_STORAGE": json.dumps(storage),
        "AUTOCOMPLETE_CATALOG_TTL_SECONDS": str(CATALOG_TTL_SECONDS),
        "AUTOCOMPLETE_UPLOAD_DIR": str(tmp_path / "uploads"),
        "WEB_CONCURRENCY": "1",
        "GUNICORN_THREADS": "4",
    }
    processes: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []

    def start(name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        env = stack_env(tmp_path / name, encoder="minilm", **common, **extra)
        log = tmp_path / f"{name}.log"
        logs.append(log)
        with log.open("wb") as handle:
            process = subprocess.Popen(
                [sys.executable, *args], cwd=settings.BASE_DIR, env=env, stdout=handle, stderr=subprocess.STDOUT
            )
        processes.append(process)
        return process

    ports = [free_port(), free_port()]
    try:
        for n, port in enumerate(ports):
            gunicorn = ["-m", "gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
            start(f"server{n}", gunicorn, HOST="127.0.0.1", PORT=str(port))
        start("worker", ["manage.py", "db_worker", "--no-reload", "--no-startup-delay"])
        for port in ports:
            wait_until(functools.partial(answers, port), timeout=120, what=f"server on {port} answering", logs=logs)
        yield {"corpus": corpus, "ports": ports, "logs": logs, "tmp": tmp_path}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def first_new_answer(tally: Tally) -> float | None:
    """Wall-clock time of the first request answered by the new index."""
    return next((wall for wall, _, top in tally.requests if top == NEW_ANSWER), None)


def test_an_upload_through_the_worker_reaches_both_servers_while_a_client_types(
    deployment: dict[str, Any], settings: Any
) -> None:
    settings.TASKS = DATABASE_TASKS
    corpus, ports, logs = deployment["corpus"], deployment["ports"], deployment["logs"]
    tallies = [Tally() for _ in ports]
    stop = threading.Event()
    clients = [threading.Thread(target=typist, args=(p, stop, t)) for p, t in zip(ports, tallies, strict=True)]
    for client in clients:
        client.start()
    try:
        wait_until(
            lambda: all(len(t.requests) >= 2 * len(QUERY) for t in tallies), timeout=30, what="typing", logs=logs
        )
        live = IndexBuild.objects.get(corpus=corpus, is_live=True)
        preview = jobs.create_upload_preview(
            faq_csv(NEW_PAIRS), filename="widget.csv", corpus=corpus, mode="merge", encoders=["minilm"]
        )
        job = jobs.confirm_upload(preview)
        wait_until(
            lambda: IngestJob.objects.get(pk=job.pk).status not in ("queued", "running"),
            timeout=60,
            what="the job finishing",
            logs=logs,
        )
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
        new = IndexBuild.objects.get(corpus=corpus, is_live=True)
        assert new.pk != live.pk and new.vector_count == len(SMALL_FAQ) + len(NEW_PAIRS)
        wait_until(
            lambda: all(first_new_answer(t) is not None for t in tallies),
            timeout=CATALOG_TTL_SECONDS + 30,
            what="both servers answering from the new index",
            logs=logs,
        )
        time.sleep(1.0)  # and typing goes on after the swap
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=60)

    switched = datetime.timestamp(new.created_at)  # written inside the transaction that made it live
    for port, tally in zip(ports, tallies, strict=True):
        statuses = [status for _, status, _ in tally.requests]
        assert tally.failures == [] and set(statuses) == {200}, (port, tally.failures[:5])
        first = first_new_answer(tally)
        assert first is not None
        lag = first - switched
        print(f"server :{port}: {len(statuses)} requests, all 200; new index answered {lag:.2f} s after the switch")
        assert lag < CATALOG_TTL_SECONDS, (port, lag)
        # Before the switch the known query had another answer; after its first new answer, only the new one.
        tops = [(wall, top) for wall, _, top in tally.requests if top is not None]
        assert any(top != NEW_ANSWER for wall, top in tops if wall < switched)
        assert all(top == NEW_ANSWER for wall, top in tops if wall >= first)
    # Each server downloaded the new build into its own cache: the storage has no local path.
    for n in range(len(ports)):
        cache = deployment["tmp"] / f"server{n}" / "index-cache"
        assert (cache / new.file_name).is_file(), sorted(os.listdir(cache)) if cache.is_dir() else "no cache"
    assert app_settings().index_dir == deployment["tmp"] / "index-storage"
