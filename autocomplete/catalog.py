"""Which corpora exist and which index build is live for each encoder, as a serving process sees them.

Re-read from the database at most every `catalog_ttl_seconds`, so several servers sharing the
database agree on a switch of live index within seconds, and a keystroke costs no query; sooner
when they share a cache (Redis): a new live build changes a token there, and a server whose snapshot
was read under another token reads again at once. While the
database cannot be reached, the last snapshot keeps serving and every request past the TTL tries
the database again: a failed read is never kept.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from django.core.cache import caches
from django.db import DatabaseError

from .conf import app_settings
from .controls import NO_CONTROLS, CorpusControls, read_controls
from .links import link_url
from .models import Corpus, IndexBuild, QueryEncoder


@dataclass(frozen=True)
class LiveBuild:
    id: int
    corpus_id: int
    encoder: str
    file_name: str
    dimension: int
    vector_count: int
    kind: str
    # SHA-256 of the file as it was built: a copy downloaded from the index storage must match it.
    checksum: str = ""
    # When the corpus's keys last changed ("" never): a server ranks with the keys of this version.
    keys_version: str = ""


@dataclass(frozen=True)
class LiveQueryEncoder:
    """A corpus's live query encoder for one encoder (autocomplete/query_encoders.py)."""

    id: int
    directory: str
    vector_space: str  # the corpus encoder's, when it was trained: it serves only while that holds


@dataclass(frozen=True)
class CorpusEntry:
    id: int
    slug: str
    name: str
    default_encoder: str
    live: dict[str, LiveBuild] = field(default_factory=dict)
    # Served only through /api/suggest, to a request with an API key for it (autocomplete/api_keys.py).
    is_private: bool = False
    # What the box offers when no suggestion fits (the url only when http(s): links.py).
    handoff_text: str = ""
    handoff_url: str = ""
    # Synonyms and rules, compiled (autocomplete/controls.py).
    controls: CorpusControls = NO_CONTROLS
    # By encoder key; an encoder without one embeds queries itself.
    query_encoders: dict[str, LiveQueryEncoder] = field(default_factory=dict)

    def serving_encoder(self, fallback: str | None) -> str | None:
        """The encoder that answers when a request names none."""
        if self.default_encoder in self.live:
            return self.default_encoder
        if fallback and fallback in self.live:
            return fallback
        return next(iter(sorted(self.live)), None)


@dataclass(frozen=True)
class Catalog:
    corpora: dict[str, CorpusEntry]
    loaded_at: float
    # The shared change token when this snapshot was read (None: none set, or no cache for it).
    change_token: str | None = None

    @functools.cached_property
    def public(self) -> dict[str, CorpusEntry]:
        """The corpora the search page offers: every one but the private ones."""
        return {slug: entry for slug, entry in self.corpora.items() if not entry.is_private}


logger = logging.getLogger(__name__)

_catalog: Catalog | None = None
_catalog_lock = threading.Lock()
_database_lost = False  # so an outage is logged once, not on every keystroke
_CHANGE_KEY = "catalog:change"


def catalog() -> Catalog:
    """A snapshot of corpora and live builds, at most `catalog_ttl_seconds` old."""
    global _catalog
    current = _catalog
    if current is not None and _is_current(current):
        return current
    with _catalog_lock:
        if _catalog is None or not _is_current(_catalog):
            _catalog = _reread(_catalog)
        return _catalog


def _is_current(snapshot: Catalog) -> bool:
    # The TTL bounds staleness whatever the cache is: an in-process one never sees another
    # server's token, and a token that vanished (evicted, Redis down) costs one early re-read.
    fresh = time.monotonic() - snapshot.loaded_at < app_settings().catalog_ttl_seconds
    return fresh and _change_token() == snapshot.change_token


def announce_catalog_change() -> None:
    """After a new live build commits: this process reads again, and so do others sharing the cache."""
    invalidate_catalog()
    alias = app_settings().catalog_change_cache
    if alias:
        # A fresh random token rather than a counter: one write, and no lost update between servers.
        caches[alias].set(_CHANGE_KEY, uuid.uuid4().hex, timeout=None)


def _change_token() -> str | None:
    alias = app_settings().catalog_change_cache
    token = caches[alias].get(_CHANGE_KEY) if alias else None
    return token if isinstance(token, str) else None


def _reread(previous: Catalog | None) -> Catalog:
    """A fresh snapshot; the previous one while the database is away (none: the error goes up)."""
    global _database_lost
    try:
        # The token is read before the database, so a change committed during the read is seen next time.
        token = _change_token()
        fresh = _read_catalog(token)
    except DatabaseError as exc:
        if not _database_lost:
            logger.error("The database cannot be reached (%s): corpora known before keep answering.", exc)
        _database_lost = True
        if previous is None:
            raise
        return previous
    if _database_lost:
        logger.warning("The database is back; the catalog is current again.")
    _database_lost = False
    return fresh


def invalidate_catalog() -> None:
    """Forget the snapshot: the next request reads the database again."""
    global _catalog
    _catalog = None


def _read_catalog(change_token: str | None) -> Catalog:
    rows = list(Corpus.objects.order_by("name"))
    keys_changed = {corpus.pk: corpus.keys_changed_at for corpus in rows}
    live: dict[int, dict[str, LiveBuild]] = {}
    for build in IndexBuild.objects.filter(is_live=True).values(
        "id", "corpus_id", "encoder", "file_name", "dimension", "vector_count", "kind", "checksum"
    ):
        changed = keys_changed.get(build["corpus_id"])
        keys_version = changed.isoformat() if changed is not None else ""
        live.setdefault(build["corpus_id"], {})[build["encoder"]] = LiveBuild(**build, keys_version=keys_version)
    controls = read_controls()
    query_encoders: dict[int, dict[str, LiveQueryEncoder]] = {}
    encoder_rows = QueryEncoder.objects.filter(is_live=True).values(
        "id", "corpus_id", "encoder", "directory", "vector_space"
    )
    for row in encoder_rows:
        query_encoders.setdefault(row["corpus_id"], {})[row["encoder"]] = LiveQueryEncoder(
            row["id"], row["directory"], row["vector_space"]
        )
    corpora = {
        corpus.slug: CorpusEntry(
            id=corpus.pk,
            slug=corpus.slug,
            name=corpus.name,
            default_encoder=corpus.default_encoder,
            live=live.get(corpus.pk, {}),
            is_private=corpus.is_private,
            handoff_text=corpus.handoff_text,
            handoff_url=link_url(corpus.handoff_url),
            controls=controls.get(corpus.pk, NO_CONTROLS),
            query_encoders=query_encoders.get(corpus.pk, {}),
        )
        for corpus in rows
    }
    return Catalog(corpora=corpora, loaded_at=time.monotonic(), change_token=change_token)
