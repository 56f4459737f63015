"""Content gaps: what visitors searched without finding, grouped by meaning, stored per corpus and range.

The queries come in as (text, count) pairs, from whatever knows them: the settled queries that got
no suggestion or no choice, or a support log imported as CSV. Grouping embeds them with the
encoder that serves the corpus, so the nearest existing question is the one visitors are offered;
it runs in a background task (`request_gaps`) or in the `gaps` command, never in a request.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from django.utils import timezone
from django_tasks import task

from embeddings.query_groups import DEFAULT_SIMILARITY, QueryGroup, group_queries

from .encoder_registry import encoder_registry
from .models import AnalysisStatus, ContentGap, Corpus
from .search import SearchError, SearchSpace, encode_queries, served_space

logger = logging.getLogger(__name__)

QueryCounts = Sequence[tuple[str, int]]
# The most searched wordings are grouped; a long tail past this adds time, not new topics.
MAX_QUERIES = 20_000
MAX_QUERY_CHARS = 500


class GapInputError(ValueError):
    """A query list or CSV that cannot be grouped; the message says how to fix it."""


def read_query_counts(data: bytes) -> list[tuple[str, int]]:
    """(query, count) rows of a CSV with a `query` column and an optional `count` column (1 if absent).

    A file without a header row is read as query,count.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise GapInputError("The file is not UTF-8 text: save it as CSV (UTF-8) and try again.") from exc
    rows = list(csv.reader(io.StringIO(text)))
    start = 0
    query_column, count_column = 0, 1
    if rows and "query" in [cell.strip().casefold() for cell in rows[0]]:
        header = [cell.strip().casefold() for cell in rows[0]]
        query_column = header.index("query")
        count_column = header.index("count") if "count" in header else -1
        start = 1
    queries: list[tuple[str, int]] = []
    for line, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip():
            continue
        queries.append((_cell(row, query_column), _count(row, count_column, line)))
    if not queries:
        raise GapInputError("The file holds no queries: give one per line, as `query,count` (count optional).")
    return queries


def _cell(row: list[str], column: int) -> str:
    return row[column] if 0 <= column < len(row) else ""


def _count(row: list[str], column: int, line: int) -> int:
    raw = _cell(row, column).strip()
    if column < 0 or not raw:
        return 1
    try:
        count = int(raw)
    except ValueError:
        count = 0
    if count < 1:
        raise GapInputError(f"Line {line}: the count {raw!r} is not a whole number of 1 or more; fix or remove it.")
    return count


def merge_wordings(queries: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Queries that differ only in case or spacing counted as one, most searched first, capped at MAX_QUERIES.

    The wording shown for a merged query is its most searched form.
    """
    totals: dict[str, int] = {}
    forms: dict[str, dict[str, int]] = {}
    for text, count in queries:
        wording = " ".join(str(text).split())[:MAX_QUERY_CHARS]
        if not wording or count < 1:
            continue
        key = wording.casefold()
        totals[key] = totals.get(key, 0) + int(count)
        variants = forms.setdefault(key, {})
        variants[wording] = variants.get(wording, 0) + int(count)
    merged = [(max(forms[key].items(), key=lambda item: (item[1], item[0]))[0], total) for key, total in totals.items()]
    merged.sort(key=lambda item: (-item[1], item[0]))
    return merged[:MAX_QUERIES]


def request_gaps(corpus: Corpus, *, start: date, end: date, queries: QueryCounts, source: str) -> ContentGap:
    """Queue the grouping of `queries` for the corpus and range; the report row says when it is done."""
    report = _report(corpus, start=start, end=end, source=source)
    compute_gaps_task.enqueue(report.pk, [[text, count] for text, count in merge_wordings(queries)])
    report.refresh_from_db()
    return report


def gaps_now(
    corpus: Corpus,
    *,
    start: date,
    end: date,
    queries: QueryCounts,
    source: str,
    similarity: float = DEFAULT_SIMILARITY,
) -> ContentGap:
    """Group `queries` in this process (the `gaps` command) and store the result."""
    report = _report(corpus, start=start, end=end, source=source)
    return compute_gaps(report.pk, merge_wordings(queries), similarity=similarity)


def _report(corpus: Corpus, *, start: date, end: date, source: str) -> ContentGap:
    if start > end:
        raise GapInputError(f"The range starts ({start}) after it ends ({end}): swap the dates.")
    report, _ = ContentGap.objects.update_or_create(
        corpus=corpus,
        start=start,
        end=end,
        defaults={"status": AnalysisStatus.QUEUED, "error": "", "source": source[:200], "requested_at": timezone.now()},
    )
    return report


@task()
def compute_gaps_task(report_id: int, queries: list[list[Any]]) -> str:
    """The background task: group the queries of one content gap report. Returns its final status."""
    return compute_gaps(report_id, [(str(text), int(count)) for text, count in queries]).status


def compute_gaps(report_id: int, queries: QueryCounts, *, similarity: float = DEFAULT_SIMILARITY) -> ContentGap:
    """Embed, group and store; a failure is recorded on the report (and logged), never raised."""
    report = ContentGap.objects.select_related("corpus").get(pk=report_id)
    ContentGap.objects.filter(pk=report_id).update(status=AnalysisStatus.RUNNING, error="")
    started = time.monotonic()
    try:
        encoder_key, groups = _grouped(report.corpus, queries, similarity=similarity)
    except Exception as exc:
        logger.exception("Content gaps of corpus %s failed", report.corpus.slug)
        ContentGap.objects.filter(pk=report_id).update(
            status=AnalysisStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}. The previous groups were kept; fix the cause and run it again.",
        )
    else:
        ContentGap.objects.filter(pk=report_id).update(
            status=AnalysisStatus.DONE,
            encoder=encoder_key,
            similarity=similarity,
            wordings=len(queries),
            searches=sum(count for _, count in queries),
            groups=groups,
            computed_at=timezone.now(),
            duration_seconds=round(time.monotonic() - started, 2),
        )
    report.refresh_from_db()
    return report


def _grouped(corpus: Corpus, queries: QueryCounts, *, similarity: float) -> tuple[str, list[dict[str, Any]]]:
    space: SearchSpace | None
    try:
        served = served_space(corpus.slug)
        # Settled queries are mostly whole questions: the corpus encoder embeds them as it did the questions.
        key, encoder, space = served.key, served.encoder, served.space
    except SearchError:
        # Not indexed yet: the gaps are still worth grouping, there is just no question to compare.
        key, space = corpus.default_encoder, None
        encoder = encoder_registry().get(key)
    texts = [text for text, _ in queries]
    vectors = encode_queries(encoder, texts)
    groups = group_queries(
        texts,
        [count for _, count in queries],
        vectors,
        index=space.index if space is not None else None,
        similarity=similarity,
    )
    return key, [_stored(group, space) for group in groups]


def _stored(group: QueryGroup, space: SearchSpace | None) -> dict[str, Any]:
    nearest = None
    if space is not None and group.nearest_id in space.position:
        nearest = space.questions[space.position[group.nearest_id]]
    return {
        "size": group.size,
        "wordings": group.wordings,
        "typical": group.typical,
        "examples": list(group.examples),
        "nearest_id": group.nearest_id if nearest is not None else None,
        "nearest_question": nearest,
        "nearest_cosine": group.nearest_cosine if nearest is not None else None,
    }
