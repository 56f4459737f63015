"""Reports on a fixture of known events give the known numbers; the admin page shows, sorts and exports them."""

from __future__ import annotations

import csv
import datetime
import io
import uuid

import pytest
from django.test import Client
from django.utils import timezone

from autocomplete import analytics
from autocomplete.models import Corpus, QAPair, SearchEvent

START, END = datetime.date(2026, 11, 10), datetime.date(2026, 11, 11)


def at(day: datetime.date, hour: int = 12) -> datetime.datetime:
    return timezone.make_aware(datetime.datetime.combine(day, datetime.time(hour)))


@pytest.fixture
def known(small_corpus: Corpus) -> list[QAPair]:
    """Seven settled queries and one choice from the empty box in the range, and one event before it."""
    p = list(QAPair.objects.filter(corpus=small_corpus).order_by("id"))
    d1, d2 = START, END
    rows = [
        ("reset password", [p[0], p[1]], p[0], d1),
        ("reset password", [p[0], p[1]], p[1], d1),
        ("reset password", [p[0], p[1]], None, d2),
        ("refund", [], None, d2),
        ("refund", [], None, d2),
        ("crypto", [], None, d1),
        ("invoices", [p[2]], None, d2),
        ("", [p[3], p[4]], p[3], d2),
        ("old", [], None, datetime.date(2026, 10, 1)),
    ]
    for query, shown, chosen, day in rows:
        SearchEvent.objects.create(
            corpus=small_corpus,
            encoder="minilm",
            page_view=uuid.uuid4().hex,
            query=query,
            shown_ids=[pair.pk for pair in shown],
            shown_count=len(shown),
            chosen_pair=chosen,
            chosen_position=shown.index(chosen) + 1 if chosen else None,
            trigger="choice" if chosen else "pause",
            created_at=at(day),
        )
    return p


def test_the_summary(small_corpus: Corpus, known: list[QAPair]) -> None:
    summary = analytics.summary(small_corpus, START, END)
    assert (summary.settled, summary.chosen, summary.mean_position) == (7, 2, 1.33)
    assert summary.choice_rate == pytest.approx(2 / 7)
    assert summary.days == [(START, 3, 2), (END, 4, 0)]
    assert summary.positions == [("position 1", 2), ("position 2", 1)]


def test_the_query_reports(small_corpus: Corpus, known: list[QAPair]) -> None:
    assert analytics.top_queries(small_corpus, START, END).rows == [
        ("reset password", 3, 2),
        ("refund", 2, 0),
        ("crypto", 1, 0),
        ("invoices", 1, 0),
    ]
    assert analytics.no_suggestion_queries(small_corpus, START, END).rows == [("refund", 2), ("crypto", 1)]
    assert analytics.no_choice_queries(small_corpus, START, END).rows == [("invoices", 1), ("reset password", 1)]
    assert analytics.gap_queries(small_corpus, START, END) == [
        ("refund", 2),
        ("crypto", 1),
        ("invoices", 1),
        ("reset password", 1),
    ]


def test_the_pair_reports(small_corpus: Corpus, known: list[QAPair]) -> None:
    p = known
    assert analytics.most_chosen_pairs(small_corpus, START, END).rows == [
        (p[0].question, 1, 1.0, p[0].pk),
        (p[1].question, 1, 2.0, p[1].pk),
        (p[3].question, 1, 1.0, p[3].pk),
    ]
    never = analytics.never_chosen_pairs(small_corpus, START, END)
    assert [row[1] for row in never.rows] == [p[2].pk, *(pair.pk for pair in p[4:])]
    assert never.note == "7 of 10 pairs were never chosen in this period."
    assert never.chart == [("chosen at least once", 3), ("never chosen", 7)]
    deleted = p[0].pk
    p[0].delete()
    assert analytics.most_chosen_pairs(small_corpus, START, END).rows[0][0] == f"(deleted pair #{deleted})"


def test_an_empty_range_and_one_day(small_corpus: Corpus, known: list[QAPair]) -> None:
    empty = analytics.summary(small_corpus, datetime.date(2025, 1, 1), datetime.date(2025, 1, 31))
    assert (empty.settled, empty.choice_rate, empty.mean_position, empty.days) == (0, None, None, [])
    assert analytics.top_queries(small_corpus, END, END).rows[0] == ("refund", 2, 0)


def test_sorting_and_csv_cells_that_cannot_run(small_corpus: Corpus) -> None:
    table = analytics.Table("t", "T", ("query", "times"), [("b", 1), ("=cmd()", 3), ("A", 2)])
    assert analytics.sorted_table(table, "query", descending=False).rows == [("=cmd()", 3), ("A", 2), ("b", 1)]
    assert analytics.sorted_table(table, "times", descending=True).rows[0] == ("=cmd()", 3)
    assert analytics.sorted_table(table, "nope", descending=True) == table
    rows = list(csv.reader(io.StringIO("".join(analytics.table_csv_rows(table)))))
    assert rows == [["query", "times"], ["b", "1"], ["'=cmd()", "3"], ["A", "2"]]


def test_a_chart_escapes_its_labels(small_corpus: Corpus) -> None:
    svg = analytics.bars_svg([("<script>alert(1)</script>", 3), ("ok", 1)], title="T")
    assert svg.startswith("<svg") and "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("<rect") == 2


# --- the admin page ------------------------------------------------------------------------------------------------


def page(client: Client, corpus: Corpus, **params: str) -> str:
    response = client.get(
        f"/admin/autocomplete/corpus/{corpus.pk}/analytics/", {"start": str(START), "end": str(END), **params}
    )
    assert response.status_code == 200
    return response.content.decode()


def test_the_admin_page_shows_the_known_figures(
    admin_client: Client, small_corpus: Corpus, known: list[QAPair]
) -> None:
    html = page(admin_client, small_corpus)
    for figure, value in [("settled", "7"), ("chosen", "2"), ("choice-rate", "29 %"), ("mean-position", "1.33")]:
        assert f'data-figure="{figure}">{value}</td>' in html
    assert html.count('<svg class="report-chart"') == 7  # per day, positions, and one per report
    assert 'id="report-no-suggestion"' in html and "https://" not in html.split("<body")[1].split("report-top")[0]
    changelist = admin_client.get("/admin/autocomplete/corpus/").content.decode()
    assert f"/admin/autocomplete/corpus/{small_corpus.pk}/analytics/" in changelist


def test_the_admin_tables_sort_and_export(admin_client: Client, small_corpus: Corpus, known: list[QAPair]) -> None:
    html = page(admin_client, small_corpus, sort="top:query", order="asc")
    top = html.split('id="report-top"')[1].split("</table>")[0]
    assert [top.index(q) for q in ("crypto", "invoices", "refund", "reset password")] == sorted(
        top.index(q) for q in ("crypto", "invoices", "refund", "reset password")
    )
    assert (
        'aria-sort="ascending"><a href="?start=2026-11-10&amp;end=2026-11-11&amp;sort=top%3Aquery&amp;order=desc"'
        in top
    )
    response = admin_client.get(
        f"/admin/autocomplete/corpus/{small_corpus.pk}/analytics/",
        {"start": str(START), "end": str(END), "report": "no-suggestion", "format": "csv"},
    )
    assert response["Content-Disposition"] == 'attachment; filename="small-no-suggestion-2026-11-10-2026-11-11.csv"'
    assert b"".join(response).decode() == "query,times\r\nrefund,2\r\ncrypto,1\r\n"


def test_a_reversed_range_is_explained(admin_client: Client, small_corpus: Corpus) -> None:
    html = page(admin_client, small_corpus, start="2026-11-12", end="2026-11-01")
    assert "The start date is after the end date: swap them." in html


def test_visitors_cannot_see_the_reports(client: Client, small_corpus: Corpus) -> None:
    response = client.get(f"/admin/autocomplete/corpus/{small_corpus.pk}/analytics/")
    assert response.status_code == 302 and "/login/" in response["Location"]
