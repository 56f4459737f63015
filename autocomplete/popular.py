"""The empty box's suggestions: a corpus's most chosen questions lately, then the ones an owner featured.

Counted from the search events at most every `popular_cache_seconds` per corpus and process, so
focusing the empty box costs a dictionary lookup, not a grouping query over the events.
"""

from __future__ import annotations

import datetime
import threading
import time

from django.db.models import Count
from django.utils import timezone

from .conf import app_settings
from .models import QAPair, SearchEvent
from .search import Suggestion

# Corpus id -> (monotonic time counted, how many were asked for, the suggestions).
_counted: dict[int, tuple[float, int, list[Suggestion]]] = {}
_lock = threading.Lock()


def popular_suggestions(corpus_id: int, *, k: int) -> list[Suggestion]:
    """Up to k questions: the most chosen over `popular_days`, then featured ones; none when neither."""
    now = time.monotonic()
    counted = _counted.get(corpus_id)
    if counted is not None and now - counted[0] < app_settings().popular_cache_seconds and counted[1] >= k:
        return counted[2][:k]
    suggestions = _count(corpus_id, k=k)
    with _lock:
        _counted[corpus_id] = (now, k, suggestions)
    return suggestions


def forget_popular() -> None:
    """Count again on the next request (after a test changes the events, or pairs are featured)."""
    with _lock:
        _counted.clear()


def most_chosen_ids(corpus_id: int, *, since: datetime.datetime, limit: int) -> list[int]:
    """Ids of the pairs chosen most often since then, most chosen first (ties: the older pair first)."""
    rows = (
        SearchEvent.objects.filter(corpus_id=corpus_id, created_at__gte=since, chosen_pair__isnull=False)
        .values("chosen_pair")
        .annotate(times=Count("id"))
        .order_by("-times", "chosen_pair")[: limit * 2]  # room for pairs deleted since
    )
    return [row["chosen_pair"] for row in rows]


def _count(corpus_id: int, *, k: int) -> list[Suggestion]:
    since = timezone.now() - datetime.timedelta(days=app_settings().popular_days)
    chosen = most_chosen_ids(corpus_id, since=since, limit=k)
    pairs = QAPair.objects.filter(corpus_id=corpus_id)
    found = {pair.pk: pair for pair in pairs.filter(pk__in=chosen).only("question", "answer", "url")}
    ordered = [found[pk] for pk in chosen if pk in found][:k]
    if len(ordered) < k:
        featured = pairs.filter(is_featured=True).exclude(pk__in=found).order_by("id").only("question", "answer", "url")
        ordered += list(featured[: k - len(ordered)])
    return [Suggestion(pair.pk, pair.question, pair.answer, pair.url, 0.0) for pair in ordered]
