"""Search events: what visitors settled on in the box and what they chose, checked and stored without personal data.

The box posts an event with `navigator.sendBeacon`, which cannot send a CSRF token, so the endpoint
is CSRF-exempt and this module trusts nothing in the body: every field is checked against a fixed
shape, the corpus must be public (or the request must carry an API key for it), and the ids must be
the corpus's own. No address, user agent or cookie is read or kept; `page_view` is a random id the
page makes for itself, so a query is tied to its choice and never to a person.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.core.cache import caches
from django.db.models import QuerySet
from django.utils import timezone
from django_tasks import task

from .api_keys import require_access
from .catalog import CorpusEntry
from .conf import app_settings
from .keys import learn_all_keys, queue_learning
from .models import QAPair, SearchEvent
from .search import SearchError, resolve_corpus, resolve_encoder

logger = logging.getLogger(__name__)

# A settled query with its list of ids fits in a few hundred bytes; this leaves room and no more.
MAX_EVENT_BYTES = 4096
FIELDS = frozenset({"corpus", "encoder", "page_view", "query", "shown_ids", "chosen_id", "chosen_position", "trigger"})
REQUIRED = ("corpus", "page_view", "query", "shown_ids", "trigger")
_PAGE_VIEW = re.compile(r"[A-Za-z0-9_-]{8,64}")
# A choice joins the settled query it follows in the same page view if that was recorded this recently.
CHOICE_JOIN_WINDOW = datetime.timedelta(hours=1)
_PURGE_KEY = "events:purged-on:"


class EventError(Exception):
    """An event that is not stored; `status` is its HTTP status."""

    status = 400


class EventCapError(EventError):
    status = 429


@dataclass(frozen=True)
class Event:
    """A checked event, ready to store."""

    corpus: CorpusEntry
    encoder: str
    page_view: str
    query: str
    shown_ids: list[int]
    chosen_id: int | None
    chosen_position: int | None
    trigger: str


def parse_event(body: bytes, *, authorization: str = "") -> Event:
    """The event in a request body, or EventError (or AccessError for a private corpus) saying what to fix."""
    if len(body) > MAX_EVENT_BYTES:
        raise EventError(f"The event is {len(body):,} bytes; an event may be at most {MAX_EVENT_BYTES:,}.")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise EventError("The body is not JSON: send one event as a JSON object (see /api/openapi.json).") from None
    if not isinstance(data, dict):
        raise EventError("The body must be a JSON object with corpus, page_view, query, shown_ids and trigger.")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise EventError(f"Unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(FIELDS))}.")
    missing = [name for name in REQUIRED if name not in data]
    if missing:
        raise EventError(f"Missing field(s): {', '.join(missing)}.")
    entry = _corpus(data["corpus"], authorization=authorization)
    trigger = _choice(data["trigger"], "trigger", SearchEvent.Trigger.values)
    shown = _ids(data["shown_ids"])
    chosen_id = _optional_int(data.get("chosen_id"), "chosen_id")
    query = _query(data["query"], trigger=trigger)
    return Event(
        corpus=entry,
        encoder=_encoder(entry, data.get("encoder")),
        page_view=_page_view(data["page_view"]),
        query=query,
        shown_ids=shown,
        chosen_id=chosen_id,
        chosen_position=_position(chosen_id, shown, data.get("chosen_position"), trigger=trigger),
        trigger=trigger,
    )


def _corpus(slug: Any, *, authorization: str) -> CorpusEntry:
    if not isinstance(slug, str) or not slug:
        raise EventError("corpus must be the slug of a corpus, as /api/suggest answers it.")
    try:
        entry = resolve_corpus(slug)
    except SearchError as exc:
        raise EventError(str(exc)) from exc
    require_access(entry, authorization=authorization)
    return entry


def _choice(value: Any, name: str, allowed: list[str]) -> str:
    if value not in allowed:
        raise EventError(f"{name} must be one of {', '.join(allowed)}.")
    return str(value)


def _encoder(entry: CorpusEntry, key: Any) -> str:
    if key is not None and not isinstance(key, str):
        raise EventError("encoder must be the encoder key /api/suggest answered with, or left out.")
    try:
        return resolve_encoder(entry, key or None)[0]
    except SearchError as exc:
        raise EventError(str(exc)) from exc


def _page_view(value: Any) -> str:
    if not isinstance(value, str) or not _PAGE_VIEW.fullmatch(value):
        raise EventError("page_view must be 8 to 64 letters, digits, - or _: a random id made once per page view.")
    return value


def _query(value: Any, *, trigger: str) -> str:
    if not isinstance(value, str):
        raise EventError("query must be the text typed, as a string.")
    if "\x00" in value:
        raise EventError("query must not hold a NUL character.")
    query = " ".join(value.split())
    limit = app_settings().max_query_length
    if len(query) > limit:
        raise EventError(f"query is {len(query)} characters; at most {limit} are accepted, as by /api/suggest.")
    if not query and trigger != SearchEvent.Trigger.CHOICE:
        raise EventError("query is empty: only a choice from the empty box's list may have no query.")
    return query


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(value: Any) -> list[int]:
    limit = app_settings().max_k
    if not isinstance(value, list) or not all(_is_int(pk) and pk > 0 for pk in value):
        raise EventError("shown_ids must be a list of the suggestion ids shown, best first.")
    if len(value) > limit or len(set(value)) != len(value):
        raise EventError(f"shown_ids must hold at most {limit} ids, none twice.")
    return list(value)


def _optional_int(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise EventError(f"{name} must be a positive integer or null.")
    return int(value)


def _position(chosen_id: int | None, shown: list[int], given: Any, *, trigger: str) -> int | None:
    """The 1-based place of the chosen id in the list shown; a position sent must agree with it."""
    if (chosen_id is None) != (trigger != SearchEvent.Trigger.CHOICE):
        raise EventError("chosen_id is required with the trigger choice, and only with it.")
    if chosen_id is None:
        if given is not None:
            raise EventError("chosen_position needs a chosen_id.")
        return None
    if chosen_id not in shown:
        raise EventError("chosen_id must be one of shown_ids.")
    position = shown.index(chosen_id) + 1
    if given is not None and given != position:
        raise EventError(f"chosen_position is {given!r} but chosen_id is shown at position {position}.")
    return position


def record_event(event: Event) -> SearchEvent:
    """Store the event (a choice completes the settled query it follows); EventError if it cannot be."""
    _check_ids(event)
    _count_for_page_view(event.page_view)
    _purge_daily()
    if event.chosen_id is not None:
        settled = _settled_without_choice(event)
        if settled is not None:
            settled.shown_ids = event.shown_ids
            settled.shown_count = len(event.shown_ids)
            settled.chosen_pair_id = event.chosen_id
            settled.chosen_position = event.chosen_position
            settled.save(update_fields=["shown_ids", "shown_count", "chosen_pair", "chosen_position"])
            queue_learning(event.corpus.id)
            return settled
    stored = SearchEvent.objects.create(
        corpus_id=event.corpus.id,
        encoder=event.encoder,
        page_view=event.page_view,
        query=event.query,
        shown_ids=event.shown_ids,
        shown_count=len(event.shown_ids),
        chosen_pair_id=event.chosen_id,
        chosen_position=event.chosen_position,
        trigger=event.trigger,
    )
    if event.chosen_id is not None:
        queue_learning(event.corpus.id)
    return stored


def _check_ids(event: Event) -> None:
    if not event.shown_ids:
        return
    found = QAPair.objects.filter(corpus_id=event.corpus.id, pk__in=event.shown_ids).count()
    if found != len(event.shown_ids):
        raise EventError(f"shown_ids holds ids that are not QA pairs of corpus '{event.corpus.slug}'.")


def _count_for_page_view(page_view: str) -> None:
    """Refuse the events of a page view past the cap: a person settles on a few queries, a script on hundreds."""
    cache = caches[app_settings().rate_limit_cache]
    key = f"events:page-view:{page_view}"
    if cache.add(key, 1, timeout=24 * 3600):
        return
    if cache.incr(key) > app_settings().events_per_page_view:
        raise EventCapError(
            f"This page view has sent more than {app_settings().events_per_page_view} events; no more are recorded."
        )


def _settled_without_choice(event: Event) -> SearchEvent | None:
    return (
        SearchEvent.objects.filter(
            corpus_id=event.corpus.id,
            page_view=event.page_view,
            query=event.query,
            chosen_pair__isnull=True,
            created_at__gte=timezone.now() - CHOICE_JOIN_WINDOW,
        )
        .order_by("-created_at")
        .first()
    )


# --- retention -----------------------------------------------------------------------------------


def expired_events(*, now: datetime.datetime | None = None) -> QuerySet[SearchEvent]:
    """Events older than the retention setting."""
    cutoff = (now or timezone.now()) - datetime.timedelta(days=app_settings().event_retention_days)
    return SearchEvent.objects.filter(created_at__lt=cutoff)


def purge_old_events(*, now: datetime.datetime | None = None) -> int:
    """Delete the events older than the retention setting; returns how many were deleted."""
    deleted, _ = expired_events(now=now).delete()
    if deleted:
        learn_all_keys()  # keys learnt from the deleted events go with them
    return deleted


@task()
def purge_old_events_task() -> int:
    """The daily purge, run by the tasks worker."""
    deleted = purge_old_events()
    logger.info("Deleted %d search events past the retention of %d days", deleted, app_settings().event_retention_days)
    return deleted


def _purge_daily() -> None:
    """Queue the purge with the first event of each day, so a deployment needs no cron for retention."""
    cache = caches[app_settings().rate_limit_cache]
    if cache.add(_PURGE_KEY + timezone.now().date().isoformat(), 1, timeout=2 * 24 * 3600):
        purge_old_events_task.enqueue()
