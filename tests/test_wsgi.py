"""config/wsgi.py: one GET computes at a time per process; requests with a body pass beside."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from config.wsgi import OneAtATime


def recording_app(inside: list[int], peak: list[int], lock: threading.Lock) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            inside.append(1)
            peak.append(len(inside))
        time.sleep(0.05)
        with lock:
            inside.pop()
        start_response("200 OK", [])
        return [b"ok"]

    return app


def run_together(method: str) -> int:
    inside: list[int] = []
    peak: list[int] = []
    lock = threading.Lock()
    gated = OneAtATime(recording_app(inside, peak, lock))
    threads = [threading.Thread(target=gated, args=({"REQUEST_METHOD": method}, lambda *args: None)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return max(peak)


def test_gets_enter_the_app_one_at_a_time() -> None:
    assert run_together("GET") == 1


def test_requests_with_a_body_are_not_held_behind_the_gate() -> None:
    assert run_together("POST") > 1
