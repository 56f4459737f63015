"""Which corpora exist and which index build is live for each encoder, as a serving process sees them.

Re-read from the database at most every `catalog_ttl_seconds`, so several servers sharing the
database agree on a switch of live index within seconds, and a keystroke costs no query. While the
database cannot be reached, the last snapshot keeps serving and every request past the TTL tries
the database again: a failed read is never kept.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from dataclasses import dataclass, field

from django.db import DatabaseError

from .conf import app_settings
from .models import Corpus, IndexBuild


@dataclass(frozen=True)
class LiveBuild:
    id: int
    corpus_id: int
    encoder: str
    file_name: str
    dimension: int
    vector_count: int
    kind: str


@dataclass(frozen=True)
class CorpusEntry:
    id: int
    slug: str
    name: str
    default_encoder: str
    live: dict[str, LiveBuild] = field(default_factory=dict)
    # Served only through /api/suggest, to a request with an API key for it (autocomplete/api_keys.py).
    is_private: bool = False

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

    @functools.cached_property
    def public(self) -> dict[str, CorpusEntry]:
        """The corpora the search page offers: every one but the private ones."""
        return {slug: entry for slug, entry in self.corpora.items() if not entry.is_private}


logger = logging.getLogger(__name__)

_catalog: Catalog | None = None
_catalog_lock = threading.Lock()
_database_lost = False  # so an outage is logged once, not on every keystroke


def catalog() -> Catalog:
    """A snapshot of corpora and live builds, at most `catalog_ttl_seconds` old."""
    global _catalog
    current = _catalog
    ttl = app_settings().catalog_ttl_seconds
    if current is not None and time.monotonic() - current.loaded_at < ttl:
        return current
    with _catalog_lock:
        if _catalog is None or time.monotonic() - _catalog.loaded_at >= ttl:
            _catalog = _reread(_catalog)
        return _catalog


def _reread(previous: Catalog | None) -> Catalog:
    """A fresh snapshot; the previous one while the database is away (none: the error goes up)."""
    global _database_lost
    try:
        fresh = _read_catalog()
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


def _read_catalog() -> Catalog:
    live: dict[int, dict[str, LiveBuild]] = {}
    for build in IndexBuild.objects.filter(is_live=True).values(
        "id", "corpus_id", "encoder", "file_name", "dimension", "vector_count", "kind"
    ):
        live.setdefault(build["corpus_id"], {})[build["encoder"]] = LiveBuild(**build)
    corpora = {
        corpus.slug: CorpusEntry(
            id=corpus.pk,
            slug=corpus.slug,
            name=corpus.name,
            default_encoder=corpus.default_encoder,
            live=live.get(corpus.pk, {}),
            is_private=corpus.is_private,
        )
        for corpus in Corpus.objects.order_by("name")
    }
    return Catalog(corpora=corpora, loaded_at=time.monotonic())
