"""`manage.py bench` end to end on a tiny corpus: it runs and reports every figure (no timing checks)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from autocomplete.benchmark import corpus_rows, held_out_queries
from autocomplete.loadtest import LoadResult, typing_prefixes
from autocomplete.management.commands.bench import format_report

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason="../shared/data is not here")
RUN_FIELDS = {"concurrency", "requests", "errors", "requests_per_second", "p50_ms", "p95_ms", "p99_ms", "mean_ms"}
STACK_FIELDS = {"ingest", "cold_start_s", "memory", "runs"}


def test_typing_prefixes_are_every_keystroke() -> None:
    assert typing_prefixes(["abc", "de"]) == ["a", "ab", "abc", "d", "de"]


def test_an_empty_run_summarises_without_failing() -> None:
    summary = LoadResult(concurrency=1, seconds=1.0, requests=0, errors=0, latencies_ms=[]).summary()
    assert set(summary) == RUN_FIELDS and summary["requests_per_second"] == 0.0


@needs_data
def test_corpus_questions_and_typed_queries_are_distinct() -> None:
    rows = corpus_rows(DATA_DIR, limit=500)
    questions = [question.lower() for question, _ in rows]
    assert len(rows) == 500 and len(set(questions)) == 500
    assert all(answer for _, answer in rows)
    queries = held_out_queries(DATA_DIR)
    assert len(queries) > 1000 and len(set(queries)) == len(queries)


@needs_data
@pytest.mark.slow
def test_bench_smoke_run_reports_every_figure(tmp_path: Path) -> None:
    out = io.StringIO()
    chart = tmp_path / "latency.png"
    call_command(
        "bench", "--corpus-size", "300", "--seconds", "1", "--concurrency", "2", "--baseline-ingest-sample", "100",
        "--chart", str(chart), "--json", stdout=out, stderr=io.StringIO(),
    )  # fmt: skip
    report = json.loads(out.getvalue())
    assert report["corpus_size"] == 300 and report["baseline_ingest_sample"] == 100
    for name in ("ours", "baseline"):
        figures = report[name]
        assert set(figures) >= STACK_FIELDS
        assert [run["concurrency"] for run in figures["runs"]] == [1, 2]
        assert all(set(run) == RUN_FIELDS and run["requests"] > 0 for run in figures["runs"])
        assert figures["ingest"]["pairs"] > 0 and figures["ingest"]["pairs_per_second"] > 0
        assert figures["memory"]["workers"] >= 1 and figures["memory"]["rss_mb_per_worker"] > 0
    assert report["baseline"]["memory"]["workers"] == 1
    assert set(report["ratios"]) >= {"p50_ms", "p99_ms", "requests_per_second", "ingest_pairs_per_second"}
    assert set(report["targets"]) == {"p50", "p99", "rps_at_8", "ingest", "cold_start", "memory"}
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "| p50 ms, one typist |" in format_report(report)
