"""Keys: wordings that find a pair besides its question, learnt from visitors' choices or imported.

A settled query after which at least `key_min_page_views` distinct page views chose the same pair
becomes a key of that pair. Learning recounts a corpus's events in one grouping query, in a
background task queued with a choice (at most every `key_learn_interval_seconds` per corpus) and
after each retention purge, so a keystroke never waits for it. When a corpus's keys change, its
`keys_changed_at` moves and the catalog change is announced: each server then embeds the keys once
with the build's encoder and ranks with them (search.live_space), with no database query per keystroke.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.core.cache import caches
from django.db import transaction
from django.db.models import Max, Min, Q
from django.db.models.functions import Lower
from django.utils import timezone
from django_tasks import task

from embeddings.keys import KeyIndex
from embeddings.lexical import LexicalIndex

from .catalog import announce_catalog_change
from .conf import app_settings
from .models import Corpus, PairKey, QAPair, SearchEvent

logger = logging.getLogger(__name__)

_LEARN_KEY = "keys:learn-queued:"


class KeyImportError(ValueError):
    """A keys file that cannot be imported; the message names the line and the fix."""


@dataclass(frozen=True)
class LearnReport:
    added: int = 0
    updated: int = 0
    removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def key_text(query: str) -> str:
    """The stored form of a wording: lower case, whitespace collapsed (the encoders are uncased)."""
    return " ".join(query.split()).lower()


def learn_keys(corpus_id: int) -> LearnReport:
    """Make the corpus's learnt keys match its events: add those past the threshold, drop those no longer."""
    threshold = app_settings().key_min_page_views
    counts = _choice_counts(corpus_id)
    questions = {
        pk: key_text(question)
        for pk, question in QAPair.objects.filter(corpus_id=corpus_id).values_list("id", "question")
    }
    existing = {(key.text, key.pair_id): key for key in PairKey.objects.filter(pair__corpus_id=corpus_id)}
    added = updated = removed = 0
    with transaction.atomic():
        for (text, pair_id), row in counts.items():
            key = existing.get((text, pair_id))
            # A pair deleted since, or a query that is its question word for word, adds nothing.
            if pair_id not in questions or questions[pair_id] == text or len(text) > 500:
                continue
            if key is not None and key.removed_at is not None:
                continue  # counted below, from the events after its removal only
            if key is not None and key.source == PairKey.Source.IMPORT:
                continue
            if row["views"] < threshold:
                continue
            if key is None:
                PairKey.objects.create(
                    pair_id=pair_id,
                    text=text,
                    source=PairKey.Source.CHOICES,
                    page_views=row["views"],
                    created_at=row["first"],
                    last_seen_at=row["last"],
                )
                added += 1
            elif (key.page_views, key.last_seen_at) != (row["views"], row["last"]):
                key.page_views, key.last_seen_at = row["views"], row["last"]
                key.save(update_fields=["page_views", "last_seen_at"])
                updated += 1
        for (text, pair_id), key in existing.items():
            if key.source != PairKey.Source.CHOICES:
                continue
            counted = counts.get((text, pair_id))
            if key.removed_at is not None:
                added += _revisit_removed(key, counted, threshold=threshold)
            elif counted is None or counted["views"] < threshold:
                # Its events expired (retention) or their pair was deleted: the key goes with them.
                key.delete()
                removed += 1
    report = LearnReport(added=added, updated=updated, removed=removed)
    if report.changed:
        mark_keys_changed(corpus_id)
    return report


def _choice_counts(corpus_id: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (key text, chosen pair): distinct page views ("views"), first and last time."""
    rows = (
        SearchEvent.objects.filter(corpus_id=corpus_id, chosen_pair__isnull=False)
        .exclude(query="")
        .annotate(text=Lower("query"))
        .values("text", "chosen_pair", "page_view")
        .annotate(first=Min("created_at"), last=Max("created_at"))
    )
    grouped: dict[tuple[str, int], dict[str, Any]] = {}
    for row in rows.iterator(chunk_size=2000):
        # Grouped here too: the database does not collapse whitespace as the stored keys do.
        entry = grouped.setdefault(
            (key_text(row["text"]), row["chosen_pair"]), {"pages": set(), "first": row["first"], "last": row["last"]}
        )
        entry["pages"].add(row["page_view"])
        entry["first"] = min(entry["first"], row["first"])
        entry["last"] = max(entry["last"], row["last"])
    for entry in grouped.values():
        entry["views"] = len(entry.pop("pages"))
    return grouped


def _revisit_removed(key: PairKey, row: dict[str, Any] | None, *, threshold: int) -> int:
    """A removed key is forgotten once its events are gone, and learnt again only from newer page views.

    Returns 1 when it is learnt again.
    """
    if row is None:
        key.delete()  # nothing left that could teach it again
        return 0
    newer = (
        SearchEvent.objects.filter(Q(chosen_pair_id=key.pair_id, query__iexact=key.text), created_at__gt=key.removed_at)
        .values("page_view")
        .distinct()
        .count()
    )
    if newer < threshold:
        return 0
    key.removed_at = None
    key.page_views = newer
    key.last_seen_at = timezone.now()
    key.save(update_fields=["removed_at", "page_views", "last_seen_at"])
    return 1


def remove_keys(keys: Iterable[PairKey]) -> int:
    """The owner removes keys: imported ones are deleted, learnt ones kept as removed so they are not relearnt."""
    now = timezone.now()
    corpora: set[int] = set()
    count = 0
    for key in keys:
        corpora.add(key.pair.corpus_id)
        if key.source == PairKey.Source.CHOICES:
            key.removed_at = now
            key.save(update_fields=["removed_at"])
        else:
            key.delete()
        count += 1
    for corpus_id in corpora:
        mark_keys_changed(corpus_id)
    return count


def mark_keys_changed(corpus_id: int) -> None:
    """Servers rebuild the corpus's key index at their next catalog read."""
    Corpus.objects.filter(pk=corpus_id).update(keys_changed_at=timezone.now())
    announce_catalog_change()


@task()
def learn_keys_task(corpus_id: int) -> dict[str, int]:
    """Learn a corpus's keys from its events, in the tasks worker."""
    report = learn_keys(corpus_id)
    logger.info("Keys of corpus #%d: %s", corpus_id, report)
    return {"added": report.added, "updated": report.updated, "removed": report.removed}


def queue_learning(corpus_id: int) -> None:
    """After a choice: learn the corpus's keys soon, at most once per `key_learn_interval_seconds`."""
    interval = app_settings().key_learn_interval_seconds
    cache = caches[app_settings().rate_limit_cache]
    if interval <= 0 or cache.add(_LEARN_KEY + str(corpus_id), 1, timeout=max(1, int(interval))):
        learn_keys_task.enqueue(corpus_id)


def learn_all_keys() -> None:
    """After a retention purge: every corpus's learnt keys follow their remaining events."""
    for corpus_id in Corpus.objects.values_list("id", flat=True):
        learn_keys(corpus_id)


# --- import --------------------------------------------------------------------------------------


def import_keys(corpus: Corpus, data: str, *, source_name: str = "the file") -> int:
    """Import `query,target_id` rows as keys of the corpus (target_id: the pair's external id, or its id).

    All or nothing: a bad row stops the import with its line number. Returns the keys added.
    """
    reader = csv.DictReader(io.StringIO(data))
    fields = reader.fieldnames or []
    missing = [name for name in ("query", "target_id") if name not in fields]
    if missing:
        raise KeyImportError(
            f"{source_name} lacks the column(s) {', '.join(missing)}: the first line must name query and target_id."
        )
    pairs = QAPair.objects.filter(corpus=corpus)
    by_external = dict(pairs.exclude(external_id="").values_list("external_id", "id"))
    by_id = set(pairs.values_list("id", flat=True))
    wanted: dict[tuple[str, int], None] = {}
    for row in reader:
        line = reader.line_num
        text = key_text(row.get("query") or "")
        target = (row.get("target_id") or "").strip()
        if not text:
            raise KeyImportError(f"{source_name}, line {line}: the query is empty.")
        if len(text) > 500:
            raise KeyImportError(f"{source_name}, line {line}: the query is {len(text)} characters; at most 500.")
        pair_id = by_external.get(target)
        if pair_id is None and target.isdigit() and int(target) in by_id:
            pair_id = int(target)
        if pair_id is None:
            raise KeyImportError(
                f"{source_name}, line {line}: target_id {target!r} is not a pair of corpus '{corpus.slug}' "
                "(give the pair's id from the corpus file, or its number in the admin)."
            )
        wanted[(text, pair_id)] = None
    existing = set(PairKey.objects.filter(pair__corpus=corpus).values_list("text", "pair_id"))
    new = [
        PairKey(pair_id=pair_id, text=text, source=PairKey.Source.IMPORT)
        for text, pair_id in wanted
        if (text, pair_id) not in existing
    ]
    PairKey.objects.bulk_create(new)
    if new:
        mark_keys_changed(corpus.pk)
    return len(new)


def import_keys_file(corpus: Corpus, path: Path) -> int:
    """`import_keys` from a UTF-8 file."""
    try:
        data = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise KeyImportError(f"{path} is not UTF-8 text: save it as UTF-8 CSV.") from exc
    return import_keys(corpus, data, source_name=str(path))


# --- serving -------------------------------------------------------------------------------------


def live_key_rows(corpus_id: int) -> list[tuple[int, str]]:
    """(pair id, text) of the corpus's keys in use, in a stable order."""
    return list(
        PairKey.objects.filter(pair__corpus_id=corpus_id, removed_at__isnull=True)
        .order_by("pair_id", "text")
        .values_list("pair_id", "text")
    )


def key_index(
    rows: list[tuple[int, str]], *, embed: Callable[[list[str]], np.ndarray], lexical: LexicalIndex
) -> KeyIndex:
    """The keys ready to rank beside the question index whose lexical side is `lexical`."""
    texts = [text for _, text in rows]
    vectors = embed(texts) if texts else np.zeros((0, 1), dtype=np.float32)
    return KeyIndex([pk for pk, _ in rows], texts, vectors, lexical_ids=lexical.ids)
