"""API keys for private corpora: made in the admin, sent as `Authorization: Bearer <key>`, stored hashed.

A key is 32 random bytes; the database keeps only its SHA-256, so a leaked database reveals no key.
What a serving process read about a key is kept for `api_key_cache_seconds`, so a keystroke with a
key costs a hash and a dictionary lookup, and a revocation takes effect within that delay.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone

from .catalog import CorpusEntry
from .conf import app_settings
from .models import ApiKey

KEY_PREFIX = "ac_"
# A key's last use is written when a process reads the key and the stored time is older than this.
LAST_USED_RESOLUTION = datetime.timedelta(hours=1)
# Keys remembered per process, unknown ones included (so guessing costs no query each time).
_MAX_REMEMBERED = 10_000


class AccessError(Exception):
    """A request for a private corpus that may not be answered; `status` is its HTTP status."""

    status = 401


class KeyRequiredError(AccessError):
    status = 401


class KeyRefusedError(AccessError):
    status = 403


@dataclass(frozen=True)
class Grant:
    """What a key allows, as read from the database."""

    key_id: int
    corpus_ids: frozenset[int]
    revoked: bool


def new_key() -> tuple[str, str]:
    """A fresh key and its SHA-256: the key is shown once, the hash is stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key_sha256(key)


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def bearer_token(authorization: str) -> str:
    """The key in an `Authorization: Bearer <key>` header, or "" when there is none."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_access(entry: CorpusEntry, *, authorization: str) -> None:
    """Return when the corpus is public or the header carries a valid key for it; raise otherwise.

    A public corpus ignores any key, so a client that sends one everywhere keeps working.
    """
    if not entry.is_private:
        return
    key = bearer_token(authorization)
    if not key:
        raise KeyRequiredError(
            f"Corpus '{entry.slug}' is private: send an API key as `Authorization: Bearer <key>` "
            "(an administrator creates one in the admin under API keys)."
        )
    grant = grant_for(key)
    if grant is None:
        raise KeyRequiredError("Unknown API key: check that it was copied whole, or ask for a new one.")
    if grant.revoked:
        raise KeyRefusedError("This API key has been revoked: ask an administrator for a new one.")
    if entry.id not in grant.corpus_ids:
        raise KeyRefusedError(
            f"This API key may not query corpus '{entry.slug}': an administrator can add it to the key's corpora."
        )


# Key hash -> (monotonic time read, what it allows or None for no such key).
_remembered: dict[str, tuple[float, Grant | None]] = {}
_lock = threading.Lock()


def grant_for(key: str) -> Grant | None:
    """What `key` allows (None: no such key), read from the database at most every few seconds.

    Looked up by its hash in a unique index: a timing difference could only tell an attacker about
    the hash of their own guess, which brings them no closer to a key, so no constant-time
    comparison is needed.
    """
    digest = key_sha256(key)
    now = time.monotonic()
    remembered = _remembered.get(digest)
    if remembered is not None and now - remembered[0] < app_settings().api_key_cache_seconds:
        return remembered[1]
    grant = _read_grant(digest)
    with _lock:
        if len(_remembered) >= _MAX_REMEMBERED:
            _remembered.clear()
        _remembered[digest] = (now, grant)
    return grant


def forget_grants() -> None:
    """Drop this process's remembered keys (after a revocation here; other processes wait the delay)."""
    with _lock:
        _remembered.clear()


def revoke(keys: QuerySet[ApiKey]) -> int:
    """Revoke the keys now; returns how many were not revoked before."""
    count = keys.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
    forget_grants()
    return count


def _read_grant(digest: str) -> Grant | None:
    row = ApiKey.objects.filter(key_sha256=digest).values("id", "revoked_at", "last_used_at").first()
    if row is None:
        return None
    corpus_ids = frozenset(
        ApiKey.corpora.through.objects.filter(apikey_id=row["id"]).values_list("corpus_id", flat=True)
    )
    _note_use(row["id"], row["last_used_at"])
    return Grant(row["id"], corpus_ids, row["revoked_at"] is not None)


def _note_use(key_id: int, last_used_at: datetime.datetime | None) -> None:
    """Write the key's last use when the stored one is over an hour old: a write per key per hour, not per request."""
    now = timezone.now()
    if last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key_id).update(last_used_at=now)
