"""Search analytics for a corpus and a date range, counted from the search events: the owner's reports.

One stored event is one settled query (a choice completes the query it follows, events.py), so every
report here is a count of rows. A query is the settled text; the empty box's choices have none and
count only towards the pairs chosen and the positions.
"""

from __future__ import annotations

import csv
import datetime
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Avg, Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .exporting import neutralise_cell
from .models import Corpus, QAPair, SearchEvent

# Rows a table shows on the page; the CSV export of a report has all of them up to CSV_ROWS.
PAGE_ROWS = 50
CSV_ROWS = 10_000


@dataclass(frozen=True)
class Table:
    """One report as rows: shown as a sortable table, a chart of its first numeric column, and as CSV."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    note: str = ""
    # What its chart shows, where that is not its first rows (label, number).
    chart: list[tuple[str, int]] | None = None


@dataclass(frozen=True)
class Summary:
    settled: int
    chosen: int
    mean_position: float | None
    days: list[tuple[datetime.date, int, int]] = field(default_factory=list)  # (day, settled, chosen)
    positions: list[tuple[str, int]] = field(default_factory=list)  # ("position 1", choices there)

    @property
    def choice_rate(self) -> float | None:
        return self.chosen / self.settled if self.settled else None


def events_between(corpus: Corpus, start: datetime.date, end: datetime.date) -> QuerySet[SearchEvent]:
    """The corpus's events from the start of `start` to the end of `end` (both days included, server time)."""
    first = timezone.make_aware(datetime.datetime.combine(start, datetime.time.min))
    after = timezone.make_aware(datetime.datetime.combine(end + datetime.timedelta(days=1), datetime.time.min))
    return SearchEvent.objects.filter(corpus=corpus, created_at__gte=first, created_at__lt=after)


def _typed(events: QuerySet[SearchEvent]) -> QuerySet[SearchEvent]:
    return events.exclude(query="")


def _query_counts(events: QuerySet[SearchEvent], limit: int) -> list[tuple[str, int]]:
    rows = events.values("query").annotate(times=Count("id")).order_by("-times", "query")[:limit]
    return [(row["query"], row["times"]) for row in rows]


def summary(corpus: Corpus, start: datetime.date, end: datetime.date) -> Summary:
    """Settled queries, those with a choice (their ratio is the choice rate), the mean chosen position, per day."""
    events = events_between(corpus, start, end)
    typed = _typed(events)
    counts = typed.aggregate(settled=Count("id"), chosen=Count("id", filter=Q(chosen_pair__isnull=False)))
    position = events.filter(chosen_position__isnull=False).aggregate(mean=Avg("chosen_position"))["mean"]
    positions = (
        events.filter(chosen_position__isnull=False)
        .values("chosen_position")
        .annotate(times=Count("id"))
        .order_by("chosen_position")
    )
    per_day = (
        typed.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(settled=Count("id"), chosen=Count("id", filter=Q(chosen_pair__isnull=False)))
        .order_by("day")
    )
    return Summary(
        settled=counts["settled"],
        chosen=counts["chosen"],
        mean_position=round(float(position), 2) if position is not None else None,
        days=[(row["day"], row["settled"], row["chosen"]) for row in per_day],
        positions=[(f"position {row['chosen_position']}", row["times"]) for row in positions],
    )


def top_queries(corpus: Corpus, start: datetime.date, end: datetime.date, *, limit: int = PAGE_ROWS) -> Table:
    typed = _typed(events_between(corpus, start, end))
    rows = (
        typed.values("query")
        .annotate(times=Count("id"), chosen=Count("id", filter=Q(chosen_pair__isnull=False)))
        .order_by("-times", "query")[:limit]
    )
    return Table(
        "top",
        "Top settled queries",
        ("query", "times", "with a choice"),
        [(row["query"], row["times"], row["chosen"]) for row in rows],
    )


def no_suggestion_queries(corpus: Corpus, start: datetime.date, end: datetime.date, *, limit: int = PAGE_ROWS) -> Table:
    events = _typed(events_between(corpus, start, end)).filter(shown_count=0)
    rows = _query_counts(events, limit)
    return Table("no-suggestion", "Queries with no suggestion", ("query", "times"), list(rows))


def no_choice_queries(corpus: Corpus, start: datetime.date, end: datetime.date, *, limit: int = PAGE_ROWS) -> Table:
    events = _typed(events_between(corpus, start, end)).filter(shown_count__gt=0, chosen_pair__isnull=True)
    rows = _query_counts(events, limit)
    return Table("no-choice", "Queries with suggestions but no choice", ("query", "times"), list(rows))


def most_chosen_pairs(corpus: Corpus, start: datetime.date, end: datetime.date, *, limit: int = PAGE_ROWS) -> Table:
    rows = list(
        events_between(corpus, start, end)
        .filter(chosen_pair__isnull=False)
        .values("chosen_pair")
        .annotate(times=Count("id"), position=Avg("chosen_position"))
        .order_by("-times", "chosen_pair")[:limit]
    )
    # Read apart rather than joined: a join would drop the choices of pairs deleted since.
    ids = [row["chosen_pair"] for row in rows]
    questions = dict(QAPair.objects.filter(pk__in=ids).values_list("id", "question"))
    return Table(
        "most-chosen",
        "Most chosen QA pairs",
        ("question", "times", "mean position", "pair id"),
        [
            (
                questions.get(row["chosen_pair"], f"(deleted pair #{row['chosen_pair']})"),
                row["times"],
                round(float(row["position"]), 2),
                row["chosen_pair"],
            )
            for row in rows
        ],
    )


def never_chosen_pairs(corpus: Corpus, start: datetime.date, end: datetime.date, *, limit: int = PAGE_ROWS) -> Table:
    chosen = events_between(corpus, start, end).filter(chosen_pair__isnull=False).values("chosen_pair")
    pairs = QAPair.objects.filter(corpus=corpus).exclude(pk__in=chosen)
    total = pairs.count()
    rows = [(question, pk) for pk, question in pairs.order_by("id").values_list("id", "question")[:limit]]
    everything = QAPair.objects.filter(corpus=corpus).count()
    note = f"{total} of {everything} pairs were never chosen in this period."
    chart = [("chosen at least once", everything - total), ("never chosen", total)]
    return Table("never-chosen", "QA pairs never chosen", ("question", "pair id"), rows, note=note, chart=chart)


def gap_queries(corpus: Corpus, start: datetime.date, end: datetime.date) -> list[tuple[str, int]]:
    """The settled queries that found no suggestion or no choice, with how often each was settled, most first."""
    events = _typed(events_between(corpus, start, end)).filter(chosen_pair__isnull=True)
    return _query_counts(events, CSV_ROWS)


REPORTS = {
    "top": top_queries,
    "no-suggestion": no_suggestion_queries,
    "no-choice": no_choice_queries,
    "most-chosen": most_chosen_pairs,
    "never-chosen": never_chosen_pairs,
}


def all_tables(corpus: Corpus, start: datetime.date, end: datetime.date) -> list[Table]:
    return [report(corpus, start, end) for report in REPORTS.values()]


def sorted_table(table: Table, column: str, *, descending: bool) -> Table:
    """The table sorted by one of its columns (None last); unknown columns leave it as it is."""
    if column not in table.columns:
        return table
    index = table.columns.index(column)

    def key(row: tuple[Any, ...]) -> tuple[bool, Any]:
        value = row[index]
        return (value is None) != descending, value.casefold() if isinstance(value, str) else value

    rows = sorted(table.rows, key=key, reverse=descending)
    return Table(table.key, table.title, table.columns, rows, table.note)


class _Echo:
    def write(self, value: str) -> str:
        return value


def table_csv_rows(table: Table) -> Iterator[str]:
    """The table as CSV lines, every text cell neutralised as the corpus export does (no formula runs)."""
    writer = csv.writer(_Echo())
    yield writer.writerow(table.columns)
    for row in table.rows:
        yield writer.writerow([neutralise_cell(value) if isinstance(value, str) else value for value in row])


# --- charts: small SVGs made here, so the page needs no script and no CDN -------------------------

BAR_HEIGHT = 18
CHART_WIDTH = 520
LABEL_WIDTH = 220


def bar_chart(table: Table, *, bars: int = 10) -> SafeString:
    """Horizontal bars of the table's first numeric column for its first rows; every label escaped."""
    return bars_svg(table.chart if table.chart is not None else _leading_rows(table, bars), title=table.title)


def _leading_rows(table: Table, bars: int) -> list[tuple[str, int]]:
    numeric = next((i for i, value in enumerate(table.rows[0]) if isinstance(value, int)), None) if table.rows else None
    return [] if numeric is None else [(str(row[0]), int(row[numeric])) for row in table.rows[:bars]]


def bars_svg(rows: list[tuple[str, int]], *, title: str) -> SafeString:
    """One horizontal bar per (label, number), labels escaped and cut to fit."""
    if not rows:
        return SafeString("")
    top = max(value for _, value in rows) or 1
    span = CHART_WIDTH - LABEL_WIDTH - 40
    height = BAR_HEIGHT * len(rows) + 4
    items = format_html_join(
        "",
        '<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{}" y="{}" width="{}" height="{}"></rect>'
        '<text x="{}" y="{}">{}</text>',
        (
            (
                LABEL_WIDTH - 6,
                n * BAR_HEIGHT + 13,
                label if len(label) <= 32 else label[:31] + "…",
                LABEL_WIDTH,
                n * BAR_HEIGHT + 3,
                max(1, round(span * value / top)),
                BAR_HEIGHT - 5,
                LABEL_WIDTH + max(1, round(span * value / top)) + 4,
                n * BAR_HEIGHT + 13,
                value,
            )
            for n, (label, value) in enumerate(rows)
        ),
    )
    return format_html(
        '<svg class="report-chart" role="img" aria-label="{}" width="{}" height="{}" viewBox="0 0 {} {}">{}</svg>',
        f"{title}: bar chart",
        CHART_WIDTH,
        height,
        CHART_WIDTH,
        height,
        items,
    )


def daily_chart(days: list[tuple[datetime.date, int, int]]) -> SafeString:
    """Columns per day: settled queries, and within them those with a choice."""
    if not days:
        return SafeString("")
    top = max(settled for _, settled, _ in days) or 1
    width = max(8, min(40, (CHART_WIDTH - 20) // len(days)))
    height = 120
    columns = format_html_join(
        "",
        '<g><title>{}: {} settled, {} chosen</title><rect x="{}" y="{}" width="{}" height="{}"></rect>'
        '<rect class="chosen" x="{}" y="{}" width="{}" height="{}"></rect></g>',
        (
            (
                day.isoformat(),
                settled,
                chosen,
                10 + n * width,
                height - round(100 * settled / top),
                width - 2,
                round(100 * settled / top),
                10 + n * width,
                height - round(100 * chosen / top),
                width - 2,
                round(100 * chosen / top),
            )
            for n, (day, settled, chosen) in enumerate(days)
        ),
    )
    total_width = max(20 + width * len(days), 200)
    dates = format_html(
        '<text x="10" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>',
        height + 16,
        days[0][0].isoformat(),
        10 + width * len(days) - 2,
        height + 16,
        days[-1][0].isoformat(),
    )
    return format_html(
        '<svg class="report-chart" role="img" aria-label="{}" width="{}" height="{}" viewBox="0 0 {} {}">{}{}</svg>',
        "Settled queries per day, the chosen part darker",
        total_width,
        height + 20,
        total_width,
        height + 20,
        columns,
        dates,
    )
