"""Replay typing against a running server: every prefix of real queries, as typists send them.

No Django here: it speaks HTTP to 127.0.0.1 like a browser would. Each typist is a process of its
own (threads would share one GIL with the measuring loop) that sends the next prefix as soon as
the previous answer arrives, so requests/s is what the server sustains, not what people type.
"""

from __future__ import annotations

import http.client
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import numpy as np


@dataclass(frozen=True)
class LoadResult:
    """Latencies and counts of one replay at one concurrency."""

    concurrency: int
    seconds: float
    requests: int
    errors: int
    latencies_ms: list[float]

    def summary(self) -> dict[str, float | int]:
        """p50/p95/p99/mean in ms, requests/s and errors, rounded for reports."""
        values = np.asarray(self.latencies_ms or [float("nan")])
        p50, p95, p99 = (float(np.percentile(values, q)) for q in (50, 95, 99))
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "errors": self.errors,
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(p50, 2),
            "p95_ms": round(p95, 2),
            "p99_ms": round(p99, 2),
            "mean_ms": round(float(np.mean(values)), 2),
        }


def typing_prefixes(queries: Sequence[str]) -> list[str]:
    """Every prefix of every query, in the order a person types them (one character at a time)."""
    return [query[:end] for query in queries for end in range(1, len(query) + 1)]


def suggest_path(prefix: str, *, corpus: str, k: int = 5) -> str:
    return f"/api/suggest?q={quote(prefix, safe='')}&corpus={quote(corpus, safe='')}&k={k}"


# The typists' work list, set before the pool forks so that children inherit it instead of
# receiving tens of thousands of strings through a pipe.
_paths: list[str] = []


# What a kept-alive connection that the server closed while idle raises on its next request.
_CLOSED_WHILE_IDLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


def _send(connection: http.client.HTTPConnection, path: str) -> tuple[float, bool]:
    """One GET on `connection`: its latency in ms (a retry included) and whether it answered 200.

    A GET on a kept-alive connection that the server closed while it was idle is sent again once on
    a new connection, as browsers and HTTP libraries do; any other failure, or a second one, counts.
    """
    started = time.perf_counter()
    for attempt in (1, 2):
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            return (time.perf_counter() - started) * 1000, response.status == 200
        except _CLOSED_WHILE_IDLE:
            connection.close()  # the next request reconnects
            if attempt == 2:
                break
        except (OSError, http.client.HTTPException):
            connection.close()
            break
    return (time.perf_counter() - started) * 1000, False


def _typist(port: int, offset: int, start_at: float, seconds: float) -> tuple[int, int, list[float]]:
    """Send prefixes from `offset` on, one after another, until the window closes."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    errors = 0
    position = offset
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        latency, ok = _send(connection, _paths[position % len(_paths)])
        position += 1
        latencies.append(latency)
        errors += 0 if ok else 1
    connection.close()
    return len(latencies), errors, latencies


def replay_paired(
    paths: Sequence[str],
    *,
    ports: Sequence[int],
    seconds: float,
    block: int = 100,
    suffixes: Sequence[str] | None = None,
) -> list[LoadResult]:
    """One typist typing the same prefixes into each server in turn; one result per port, in order.

    With `suffixes` (one per port), each path sent to a port ends with that port's suffix: the same
    server listed twice with "" and "&tags=x" compares unfiltered and filtered requests alike.

    The prefixes go in blocks of `block` requests: a block to one server, the same block to the
    next, and so on, the first server of each round rotating. Every server thus answers the same
    prefixes, and a noisy machine's drift (other processes, CPU frequency) falls on all of them
    alike, so their ratios hold even when the absolute figures move. Blocks rather than single
    requests because alternating per request evicts each server's model and index from the CPU
    caches on every keystroke, which no server suffers in production. A result's requests/s is one typist's rate
    against that server alone: requests over the time spent waiting for it.
    """
    if not paths or not ports or block < 1:
        raise ValueError("replay_paired() needs request paths, ports and a positive block.")
    endings = list(suffixes) if suffixes is not None else [""] * len(ports)
    if len(endings) != len(ports):
        raise ValueError("replay_paired() needs one suffix per port.")
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for port in ports]
    latencies: list[list[float]] = [[] for _ in ports]
    errors = [0] * len(ports)
    deadline = time.perf_counter() + seconds
    start = 0
    round_number = 0
    while time.perf_counter() < deadline:
        chunk = [paths[(start + i) % len(paths)] for i in range(block)]
        for turn in range(len(ports)):
            server = (round_number + turn) % len(ports)
            for path in chunk:
                latency, ok = _send(connections[server], path + endings[server])
                latencies[server].append(latency)
                errors[server] += 0 if ok else 1
        start += block
        round_number += 1
    for connection in connections:
        connection.close()
    return [
        LoadResult(concurrency=1, seconds=sum(values) / 1000, requests=len(values), errors=failed, latencies_ms=values)
        for values, failed in zip(latencies, errors, strict=True)
    ]


def replay(paths: Sequence[str], *, port: int, concurrency: int, seconds: float) -> LoadResult:
    """Run `concurrency` typists for `seconds`, each starting at a different place in `paths`."""
    global _paths
    if not paths:
        raise ValueError("replay() needs at least one request path.")
    _paths = list(paths)
    stride = max(1, len(_paths) // concurrency)
    start_at = time.time() + 0.3 + 0.05 * concurrency  # every typist ready before the window opens
    jobs = [(port, typist * stride, start_at, seconds) for typist in range(concurrency)]
    with multiprocessing.get_context("fork").Pool(concurrency) as pool:
        results = pool.starmap(_typist, jobs)
    latencies = [value for _, _, values in results for value in values]
    return LoadResult(
        concurrency=concurrency,
        seconds=seconds,
        requests=sum(count for count, _, _ in results),
        errors=sum(errors for _, errors, _ in results),
        latencies_ms=latencies,
    )
