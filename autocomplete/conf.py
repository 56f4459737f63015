"""The app's settings: `settings.AUTOCOMPLETE` (a dict) parsed once into a typed, frozen object.

As Django parses `CACHES` once, this module is the only reader of that dict: the rest of the app
asks `app_settings()`. Keys left out take the defaults below; an unknown key is refused, so a typo
in a deployment's settings fails at start-up instead of being ignored.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from embeddings.vector_index import HNSWOptions

_DEFAULT_VAR_DIR = Path("var")
# Folders of var_dir, unless set apart: setting var_dir alone moves them all.
_VAR_FOLDERS = {
    "onnx_dir": "onnx",
    "index_dir": "indexes",
    "index_cache_dir": "index-cache",
    "upload_dir": "uploads",
    "query_encoder_dir": "query-encoders",
}


@dataclass(frozen=True)
class AutocompleteSettings:
    """Every setting of the app; the README's configuration table says which variable sets each.

    Build it with `from_dict`, which also places the folders left unset inside `var_dir`.
    """

    # Where the database (in the demo) and, unless set apart, index, upload and ONNX files live.
    var_dir: Path = _DEFAULT_VAR_DIR
    # Encoders by key: {"PATH": local model directory, "BACKEND": ...}; a key that is not built in
    # also gives NAME, HUB_ID and DIMENSION (embeddings.encoders.specs_from_settings).
    encoders: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    allow_download: bool = False
    # "onnx-int8" (served), "onnx" (fp32) or "torch" (sentence-transformers); per encoder: BACKEND.
    encoder_backend: str = "onnx-int8"
    onnx_dir: Path = _DEFAULT_VAR_DIR / "onnx"
    # Cores one encoder call may use; 0 = all (ingest). Serving workers run one each.
    encoder_threads: int = 0
    default_encoder: str = "ivysaur"
    # Used openly when the default encoder cannot load; None = never fall back.
    fallback_encoder: str | None = "minilm"
    # Served when a request names no corpus and several exist.
    default_corpus: str | None = None
    index_dir: Path = _DEFAULT_VAR_DIR / "indexes"
    # Alias in STORAGES of the storage holding index files (S3, a shared directory...); "" = index_dir.
    index_storage: str = ""
    # This process's copies of files from a storage that is not a local directory.
    index_cache_dir: Path = _DEFAULT_VAR_DIR / "index-cache"
    # A superseded build's files stay this long after the switch, for servers still loading it: it
    # must exceed the catalog TTL plus the time a server takes to download and load an index.
    superseded_grace_seconds: float = 600.0
    # Above this many questions, HNSW (approximate) instead of exact search.
    ann_threshold: int = 20_000
    hnsw: HNSWOptions = field(default_factory=HNSWOptions)
    # How often a serving process re-reads which build is live: the delay of a hot swap across servers.
    catalog_ttl_seconds: float = 2.0
    # Cache alias of the token a new live build changes, so servers sharing that cache (Redis) re-read
    # the catalog at once rather than within the TTL. Off ("") by default: an in-process cache shows
    # no other server's token, and reading it would only cost every keystroke a lookup.
    catalog_change_cache: str = ""
    embed_batch_size: int = 64
    # Cache alias for query vectors; "" turns the cache off.
    query_cache: str = "query-embeddings"
    max_query_length: int = 200
    max_k: int = 20
    default_k: int = 5
    max_question_length: int = 1_000
    max_answer_length: int = 20_000
    max_upload_bytes: int = 50_000_000
    # Body size allowed without a session cookie: any form but the admin upload fits.
    max_anonymous_body_bytes: int = 64 * 1024
    max_rows: int = 200_000
    # The app serves its own static files (no web server in front); off behind nginx or a CDN.
    serve_static: bool = True
    upload_dir: Path = _DEFAULT_VAR_DIR / "uploads"
    # A running job not heard from for this long (its worker on another machine) is interrupted.
    job_stale_seconds: float = 120.0
    # Pause after each embedding batch, leaving CPU to serving on a shared machine.
    job_batch_pause_seconds: float = 0.0
    # A job whose worker was killed or lost is queued again by itself this many times (keeping its
    # place in its corpus's line); 0: it waits for an admin's "run again".
    job_auto_retries: int = 1
    # A job whose corpus another job is ingesting stays queued and is tried again after this long.
    job_busy_retry_seconds: float = 5.0
    # Trained query encoders (embeddings/query_encoder.py), one folder each.
    query_encoder_dir: Path = _DEFAULT_VAR_DIR / "query-encoders"
    # Training steps of `train_query_encoder` and the admin's action, unless given.
    query_encoder_steps: int = 100
    # After an ingest adds, changes or removes at least this share of a corpus's questions, its live
    # query encoders are trained again as a job; 0 never does.
    query_encoder_retrain_share: float = 0.2
    # Unconfirmed upload previews (and their files) are dropped after this long.
    preview_ttl_seconds: float = 24 * 3600.0
    # Limit suggestion requests (the API and the search box's partial) per client address; the
    # benchmark turns it off, as it types hundreds of requests a second from one address.
    rate_limit: bool = True
    # Sustained requests per second one address may make; a typist sends a few at most.
    rate_limit_per_second: float = 10.0
    # Requests one address may make at once: a whole office behind one address typing together.
    rate_limit_burst: int = 50
    # Cache alias holding the counters: it must be shared (Redis, memcached) by every worker and host.
    rate_limit_cache: str = "default"
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client; none by default,
    # since anyone can send that header.
    trusted_proxies: tuple[str, ...] = ()
    # How long a serving process trusts what it read about an API key: the delay of a revocation.
    api_key_cache_seconds: float = 10.0
    # Origins (scheme://host[:port]) whose pages may call /api/suggest from a browser; none: no CORS.
    cors_allowed_origins: tuple[str, ...] = ()
    # Record what visitors settle on in the search box (autocomplete/events.py); off: the box sends nothing.
    events: bool = True
    # A typed text counts as settled once the typist pauses this long (or submits, or chooses).
    settle_seconds: float = 1.5
    # Events one page view may record: a person settles on a few queries, a script on hundreds.
    events_per_page_view: int = 60
    # Events older than this are deleted, daily by a background task and by `manage.py purge_events`.
    event_retention_days: int = 90
    # The empty box offers the questions most chosen over this many days (else the featured ones).
    popular_days: int = 30
    # How long a server keeps a corpus's popular questions before counting them again.
    popular_cache_seconds: float = 600.0
    # A settled query becomes a key of the pair chosen for it (autocomplete/keys.py) once this many
    # distinct page views chose that pair after it: one visitor's odd wording must not move rankings.
    key_min_page_views: int = 3
    # Keys are learnt from the events by a background task queued with a choice, at most this often
    # per corpus; servers fold the new keys in at their next catalog read.
    key_learn_interval_seconds: float = 300.0

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AutocompleteSettings:
        """Parse the `AUTOCOMPLETE` dict (keys in capitals, like Django's own settings)."""
        known = {f.name.upper(): f.name for f in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ImproperlyConfigured(
                f"Unknown AUTOCOMPLETE setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
            )
        values = {known[key]: value for key, value in raw.items()}
        var_dir = Path(values.get("var_dir") or _DEFAULT_VAR_DIR)
        values["var_dir"] = var_dir
        for name, folder in _VAR_FOLDERS.items():
            values[name] = Path(values[name]) if values.get(name) else var_dir / folder
        if isinstance(values.get("hnsw"), Mapping):
            hnsw = values["hnsw"]
            values["hnsw"] = HNSWOptions(
                m=int(hnsw.get("M", 32)),
                ef_construction=int(hnsw.get("EF_CONSTRUCTION", 200)),
                ef_search=int(hnsw.get("EF_SEARCH", 128)),
            )
        # An empty variable means "none" for these, as unset means "the default".
        for name in ("fallback_encoder", "default_corpus"):
            if name in values:
                values[name] = values[name] or None
        for name in ("trusted_proxies", "cors_allowed_origins"):
            if name in values:
                values[name] = _string_tuple(values[name])
        return _check_access_settings(cls(**values))


def _check_access_settings(parsed: AutocompleteSettings) -> AutocompleteSettings:
    """Refuse, at start-up, a limit or a list that every request would trip over."""
    if parsed.superseded_grace_seconds <= parsed.catalog_ttl_seconds:
        raise ImproperlyConfigured(
            f"SUPERSEDED_GRACE_SECONDS ({parsed.superseded_grace_seconds:g}) must exceed CATALOG_TTL_SECONDS "
            f"({parsed.catalog_ttl_seconds:g}): a server may load a superseded index until it re-reads the catalog."
        )
    if parsed.rate_limit and (parsed.rate_limit_per_second <= 0 or parsed.rate_limit_burst < 1):
        raise ImproperlyConfigured(
            "RATE_LIMIT_PER_SECOND must be above 0 and RATE_LIMIT_BURST at least 1; "
            "to turn the limit off, set AUTOCOMPLETE_RATE_LIMIT=0."
        )
    if parsed.settle_seconds <= 0 or parsed.events_per_page_view < 1 or parsed.event_retention_days < 1:
        raise ImproperlyConfigured(
            "SETTLE_SECONDS must be above 0, and EVENTS_PER_PAGE_VIEW and EVENT_RETENTION_DAYS at least 1; "
            "to record no events, set AUTOCOMPLETE_EVENTS=0."
        )
    if parsed.key_min_page_views < 1 or parsed.key_learn_interval_seconds < 0:
        raise ImproperlyConfigured("KEY_MIN_PAGE_VIEWS must be at least 1 and KEY_LEARN_INTERVAL_SECONDS at least 0.")
    for origin in parsed.cors_allowed_origins:
        if not _ORIGIN.fullmatch(origin):
            raise ImproperlyConfigured(
                f"CORS_ALLOWED_ORIGINS: {origin!r} is not an origin; write it as scheme://host[:port], "
                "without a path or a trailing slash (https://help.example.com)."
            )
    for proxy in parsed.trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"TRUSTED_PROXIES: {proxy!r} is neither an IP address nor a network (10.0.0.0/8)."
            ) from None
    return parsed


_ORIGIN = re.compile(r"https?://[^/\s]+")


def _string_tuple(value: str | Iterable[str]) -> tuple[str, ...]:
    """A comma-separated string or a list, as a tuple of non-empty stripped items."""
    items = value.split(",") if isinstance(value, str) else value
    return tuple(item.strip() for item in items if item.strip())


@functools.cache
def app_settings() -> AutocompleteSettings:
    """The parsed settings of this process (parsed again when a test overrides AUTOCOMPLETE)."""
    return AutocompleteSettings.from_dict(getattr(settings, "AUTOCOMPLETE", {}))


@receiver(setting_changed)
def _reparse(*, setting: str, **kwargs: Any) -> None:
    if setting == "AUTOCOMPLETE":
        app_settings.cache_clear()
