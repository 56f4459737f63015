"""The real server (gunicorn with config/gunicorn.py, two workers) on 127.0.0.1: it boots with a broken
index file, serves every other corpus, and a worker killed with SIGKILL under load loses no request
beyond those in flight."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings

from autocomplete.measure.benchmark import (
    CORPUS_SLUG,
    Server,
    ingest_into,
    running_server,
    stack_env,
    write_corpus_csv,
)
from autocomplete.measure.loadtest import suggest_path
from embeddings.encoders import Encoder

from .conftest import SMALL_FAQ
from .test_health import OTHER_FAQ

pytestmark = pytest.mark.slow

CLIENTS = 4
LOAD_SECONDS = 6.0


def get(port: int, path: str, *, timeout: float = 10) -> tuple[int, dict[str, object]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def workers_of(master: int) -> list[int]:
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # a process that ended while being read
        if int(fields.get("PPid", "0").strip()) == master:
            pids.append(int(status.parent.name))
    return pids


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, minilm: Encoder) -> Iterator[Server]:
    """Two corpora in a temporary var directory; the index file of `broken` truncated before the boot.

    `minilm` first: its ONNX export, shared with the server, is then made once, by this process.
    """
    var_dir = tmp_path_factory.mktemp("served")
    env = stack_env(var_dir, encoder="minilm", WEB_CONCURRENCY="2")
    write_corpus_csv(SMALL_FAQ, var_dir / "small.csv")
    write_corpus_csv(OTHER_FAQ, var_dir / "broken.csv")
    ingest_into(var_dir, var_dir / "small.csv", env)
    ingest = [sys.executable, "manage.py", "ingest", str(var_dir / "broken.csv"), "--corpus", "broken"]
    subprocess.run(ingest, cwd=settings.BASE_DIR, env=env, check=True, capture_output=True)
    (index_file,) = (var_dir / "indexes").glob("broken--minilm--*.faiss")
    index_file.write_bytes(index_file.read_bytes()[:-64])
    with running_server(env, var_dir / "server.log", timeout=120) as started:
        yield started


def test_the_server_boots_and_serves_around_a_broken_index(server: Server) -> None:
    assert get(server.port, "/healthz") == (200, {"status": "ok"})
    status, body = get(server.port, suggest_path("password", corpus=CORPUS_SLUG))
    assert status == 200 and body["suggestions"]
    status, body = get(server.port, suggest_path("delivery", corpus="broken"))
    assert status == 503 and "the index file is truncated" in str(body["error"])
    assert str(server.log.parent) not in str(body)
    status, body = get(server.port, "/readyz")
    assert (status, body["reason"]) == (503, "Cannot serve corpus 'broken' (minilm): the index file is truncated.")
    assert "Warm-up of broken/minilm failed: the index file is truncated" in server.log.read_text()


@dataclass
class Tally:
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def typist(port: int, deadline: float, tally: Tally) -> None:
    words = ["how do i", "reset my password", "cancel my subscription", "download invoices", "mobile app"]
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            status, _ = get(port, suggest_path(words[n % len(words)], corpus=CORPUS_SLUG))
            outcome = "" if status == 200 else f"HTTP {status}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with tally.lock:
            if outcome:
                tally.failures.append(outcome)
            else:
                tally.answered += 1


def test_a_worker_killed_under_load_loses_only_requests_in_flight(server: Server) -> None:
    workers = workers_of(server.process.pid)
    assert len(workers) == 2
    tally = Tally()
    deadline = time.monotonic() + LOAD_SECONDS
    clients = [threading.Thread(target=typist, args=(server.port, deadline, tally)) for _ in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(LOAD_SECONDS / 2)
    answered_before_kill = tally.answered
    os.kill(workers[0], signal.SIGKILL)
    for client in clients:
        client.join(timeout=LOAD_SECONDS + 30)
    assert answered_before_kill > 0 and tally.answered > answered_before_kill
    assert len(tally.failures) <= CLIENTS, tally.failures
    # The master replaces the worker, which warms up (the broken corpus again included) and serves.
    replaced = time.monotonic() + 60
    while len(set(workers_of(server.process.pid)) - {workers[0]}) < 2 and time.monotonic() < replaced:
        time.sleep(0.2)
    assert len(set(workers_of(server.process.pid)) - {workers[0]}) == 2
    assert get(server.port, suggest_path("password", corpus=CORPUS_SLUG))[0] == 200
