"""At most one ingest job per corpus at a time, enforced by the database rather than by a process.

PostgreSQL: a session-level advisory lock keyed by the corpus slug, held by the worker's connection
for the whole job. The server releases it when that connection ends, so a worker killed on any
machine frees its corpus at once, and a running job whose lock is free has lost its worker.
Other databases (SQLite, one machine) have no such lock: there the job row marked running is the
lease, claimed in a write transaction (BEGIN IMMEDIATE serialises them, see config/settings.py)
and freed when the job ends or its worker is found gone (jobs.refresh_liveness).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import DatabaseError, connection

logger = logging.getLogger(__name__)

# The first half of the two-part advisory key: it keeps the app's locks apart from any other
# application's on the same server. ASCII "AcIn", below 2**31 as PostgreSQL's int4 requires.
_NAMESPACE = 0x4163496E


def uses_advisory_locks() -> bool:
    """Whether the database itself holds corpus locks (PostgreSQL); else the running job row does."""
    return connection.vendor == "postgresql"


def _key(slug: str) -> int:
    """The corpus's half of the key: a stable signed 32-bit hash of its slug (Python's hash() varies)."""
    return int.from_bytes(hashlib.sha256(slug.encode()).digest()[:4], "big", signed=True)


@contextmanager
def corpus_lock(slug: str) -> Iterator[bool]:
    """Hold the corpus's lock for the block when it is free (yields True); never waits (yields False).

    Where the database has no advisory locks this yields True: the caller's claim of the job row
    in a write transaction is the lock there.
    """
    if not uses_advisory_locks():
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [_NAMESPACE, _key(slug)])
        row = cursor.fetchone()
    held = bool(row and row[0])
    try:
        yield held
    finally:
        if held:
            _unlock(slug)


def _unlock(slug: str) -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [_NAMESPACE, _key(slug)])
    except DatabaseError:
        # The connection is gone, and the server released the lock with it.
        logger.warning("Could not release the lock of corpus %r; its connection was lost", slug, exc_info=True)


def corpus_lock_free(slug: str) -> bool:
    """Whether no other database session holds the corpus's lock (PostgreSQL only).

    Locks are re-entrant, so this session's own lock reads as free: ask only about jobs whose
    worker is known not to be this process.
    """
    with corpus_lock(slug) as held:
        return held
