"""`manage.py bench` end to end on a tiny corpus: it runs and reports every figure (no timing checks)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from autocomplete.measure.benchmark import corpus_rows, held_out_queries
from autocomplete.measure.loadtest import LoadResult, replay_paired, suggest_path, typing_prefixes
from autocomplete.measure.reports import format_bench

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason="../shared/data is not here")
RUN_FIELDS = {"concurrency", "requests", "errors", "requests_per_second", "p50_ms", "p95_ms", "p99_ms", "mean_ms"}
STACK_FIELDS = {"ingest", "cold_start_s", "memory", "runs"}


def test_typing_prefixes_are_every_keystroke() -> None:
    assert typing_prefixes(["abc", "de"]) == ["a", "ab", "abc", "d", "de"]


def test_an_empty_run_summarises_without_failing() -> None:
    summary = LoadResult(concurrency=1, seconds=1.0, requests=0, errors=0, latencies_ms=[]).summary()
    assert set(summary) == RUN_FIELDS and summary["requests_per_second"] == 0.0


@pytest.fixture
def two_servers() -> Iterator[list[tuple[int, list[str]]]]:
    """Two local HTTP servers recording the paths they are asked for; the second answers 500."""
    servers = []
    for status in (200, 500):
        seen: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self, seen: list[str] = seen, status: int = status) -> None:  # noqa: N802 - http.server's name
                seen.append(self.path)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append((server, seen))
    yield [(server.server_address[1], seen) for server, seen in servers]
    for server, _ in servers:
        server.shutdown()
        server.server_close()


def test_paired_replay_sends_every_prefix_to_each_server(two_servers: list[tuple[int, list[str]]]) -> None:
    paths = [suggest_path(prefix, corpus="help") for prefix in typing_prefixes(["how do", "mask"])]
    ok, failing = replay_paired(paths, ports=[port for port, _ in two_servers], seconds=0.3, block=4)
    (_, seen_ok), (_, seen_failing) = two_servers
    # Same prefixes, in typing order, to both: the ratio compares like with like.
    assert seen_ok == seen_failing and seen_ok[: len(paths)] == paths
    assert len(seen_ok) % 4 == 0
    assert ok.requests == failing.requests == len(seen_ok)
    assert ok.errors == 0 and failing.errors == failing.requests
    # One typist's rate against that server alone: requests over the time spent waiting for it.
    assert ok.summary()["requests_per_second"] == pytest.approx(1000 / ok.summary()["mean_ms"], rel=0.02)


@pytest.mark.parametrize(
    ("encoder", "message"),
    [("nope", "Unknown encoder 'nope'"), ("gist-small", "fetch_encoders gist-small")],
)
def test_an_encoder_that_cannot_load_is_refused_before_any_work(
    encoder: str, message: str, configure, tmp_path: Path
) -> None:
    configure(ENCODERS={"gist-small": {"PATH": None}})
    with pytest.raises(CommandError, match=message):
        call_command("bench", "--encoder", encoder, "--data-dir", str(tmp_path), stdout=io.StringIO())


@needs_data
def test_corpus_questions_and_typed_queries_are_distinct() -> None:
    rows = corpus_rows(DATA_DIR, limit=500)
    questions = [question.lower() for question, _, _ in rows]
    assert len(rows) == 500 and len(set(questions)) == 500
    assert all(answer for _, answer, _ in rows)
    assert {tag for _, _, tag in rows} == {"medquad"}  # the first dataset's name tags its pairs
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
    assert report["encoder"] == "minilm"
    for name in ("ours", "baseline"):
        figures = report[name]
        assert set(figures) >= STACK_FIELDS
        assert [run["concurrency"] for run in figures["runs"]] == [1, 2]
        assert all(set(run) == RUN_FIELDS and run["requests"] > 0 for run in figures["runs"])
        assert figures["ingest"]["pairs"] > 0 and figures["ingest"]["pairs_per_second"] > 0
        assert figures["memory"]["workers"] >= 1 and figures["memory"]["rss_mb_per_worker"] > 0
    assert report["baseline"]["memory"]["workers"] == 1
    assert set(report["ratios"]) >= {"p50_ms", "p99_ms", "requests_per_second", "ingest_pairs_per_second"}
    assert set(report["targets"]) == {"p50", "p99", "rps_at_8", "ingest", "cold_start", "memory", "filtered"}
    filtered = report["ours"]["filtered"]
    assert set(filtered["runs"]) == {"unfiltered", "small", "large"}
    assert all(run["requests"] > 0 and run["errors"] == 0 for run in filtered["runs"].values())
    assert set(filtered["p50_ratio"]) == {"small", "large"}
    assert chart.read_bytes().startswith(b"\x89PNG")
    assert "| p50 ms, one typist |" in format_bench(report)
