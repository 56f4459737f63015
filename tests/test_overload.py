"""`make serve`'s stack under overload and slow clients: loopback only, bounded in count and time.

The server is the real one (gunicorn with config/gunicorn.py, production settings) over a small
corpus ingested by the real code into a temporary directory, as `manage.py bench` builds it.
"""

from __future__ import annotations

import http.client
import socket
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from autocomplete.measure.benchmark import Server, ingest_into, running_server, stack_env, write_corpus_csv
from autocomplete.measure.loadtest import suggest_path

from .conftest import SMALL_FAQ

pytestmark = pytest.mark.slow

CLIENTS = 200
SECONDS = 30.0
SLOW_CLIENTS = 16
PREFIXES = [question[:end] for question, _ in SMALL_FAQ for end in range(1, len(question) + 1)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("overload")
    csv_path = root / "faq.csv"
    write_corpus_csv(SMALL_FAQ, csv_path)
    # Every client here types from 127.0.0.1: the per-address limit would answer most of them 429.
    env = stack_env(root / "var", encoder="minilm", DJANGO_SECRET_KEY="overload-test-key")
    ingest_into(root / "var", csv_path, env)
    with running_server(env, root / "server.log") as started:
        yield started


def _typist(port: int, stop_at: float, statuses: Counter[int | str], lock: threading.Lock, offset: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    position = offset
    seen: Counter[int | str] = Counter()
    while time.monotonic() < stop_at:
        path = suggest_path(PREFIXES[position % len(PREFIXES)], corpus="bench")
        position += 1
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            seen[response.status] += 1
        except (OSError, http.client.HTTPException) as exc:
            seen[type(exc).__name__] += 1
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.close()
    with lock:
        statuses.update(seen)


def test_two_hundred_typists_get_no_5xx_and_no_dropped_connection(server: Server) -> None:
    statuses: Counter[int | str] = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + SECONDS
    typists = [
        threading.Thread(target=_typist, args=(server.port, stop_at, statuses, lock, n * 7)) for n in range(CLIENTS)
    ]
    for typist in typists:
        typist.start()
    for typist in typists:
        typist.join(timeout=SECONDS + 90)
    assert not any(typist.is_alive() for typist in typists)
    failures = {status: count for status, count in statuses.items() if not (isinstance(status, int) and status < 500)}
    assert failures == {}, f"answers by status: {dict(statuses)}"
    assert statuses[200] > CLIENTS  # every typist got answers, not just a few


def _time_one(port: int, path: str) -> float:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    finally:
        connection.close()
    return time.perf_counter() - started


def test_half_sent_requests_do_not_stop_other_visitors(server: Server) -> None:
    before = [_time_one(server.port, suggest_path(prefix, corpus="bench")) for prefix in PREFIXES[:20]]
    slow = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            # A request line and one header, then silence: the request never completes.
            sock.sendall(b"GET /api/suggest?q=how HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(sock)
        time.sleep(0.5)
        during = [_time_one(server.port, suggest_path(prefix, corpus="bench")) for prefix in PREFIXES[20:60]]
    finally:
        for sock in slow:
            sock.close()
    # Prompt means what an unloaded visitor gets, give or take: far from the minute a blocked
    # worker would wait for its slow client.
    assert max(during) < 2.0, f"slowest answer {max(during):.2f} s with {SLOW_CLIENTS} slow clients"
    assert statistics.median(during) < max(0.25, 5 * statistics.median(before))


def test_the_server_log_shows_no_error(server: Server) -> None:
    log = Path(server.log).read_text(errors="replace")
    assert "Traceback" not in log and "[CRITICAL]" not in log
