"""manage.py bench [--corpus-size N] [--concurrency C ...] [--seconds S] [--encoder KEY] [--json] [--chart PATH]"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.benchmark import BenchError, Options, run_bench

DEFAULT_CHART = Path(settings.BASE_DIR) / "static" / "bench" / "latency.png"


class Command(BaseCommand):
    help = (
        "Build a corpus from ../shared/data in a temporary directory, serve it with gunicorn, replay "
        "typing and report latency, requests/s, memory, cold start and ingest speed beside a naive baseline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--corpus-size", type=int, help="Cap on corpus questions (default: all, about 70k).")
        parser.add_argument("--concurrency", type=int, nargs="+", default=[8], help="Concurrent typists (default 8).")
        parser.add_argument("--seconds", type=float, default=10.0, help="Seconds of typing per concurrency.")
        parser.add_argument(
            "--baseline-ingest-sample", type=int, default=3000, help="Pairs the slow baseline ingests (default 3000)."
        )
        parser.add_argument("--workers", type=int, help="gunicorn workers for our stack (default: config).")
        parser.add_argument("--chart", type=Path, default=DEFAULT_CHART, help="Where to write the latency PNG.")
        parser.add_argument("--data-dir", type=Path, help="Datasets folder (default: ../shared/data).")
        parser.add_argument(
            "--encoder",
            default="minilm",
            help="Encoder key both stacks run (default minilm; gist-small or ivysaur need their weights' PATH).",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        if any(c < 1 for c in options["concurrency"]) or options["seconds"] <= 0:
            raise CommandError("--concurrency and --seconds must be positive.")
        bench = Options(
            corpus_size=options["corpus_size"],
            concurrency=options["concurrency"],
            seconds=options["seconds"],
            baseline_ingest_sample=options["baseline_ingest_sample"],
            chart=options["chart"],
            workers=options["workers"],
            encoder=options["encoder"],
        )
        if options["data_dir"]:
            bench.data_dir = options["data_dir"]
        try:
            report = run_bench(bench, progress=lambda message: self.stderr.write(f"bench: {message}"))
        except BenchError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2))
        else:
            self.stdout.write(format_report(report))


def format_report(report: dict[str, Any]) -> str:
    """The figures as a Markdown table: ours, baseline, ratio, target met."""
    ours, base, ratio, met = report["ours"], report["baseline"], report["ratios"], report["targets"]

    def run(figures: dict[str, Any], concurrency: int) -> dict[str, Any]:
        return next((r for r in figures["runs"] if r["concurrency"] == concurrency), figures["runs"][-1])

    one, one_base = run(ours, 1), run(base, 1)
    top, top_base = ours["runs"][-1], base["runs"][-1]
    c = top["concurrency"]
    lines = [
        f"encoder: {report['encoder']}; corpus: {report['corpus_size']} questions; {report['seconds']} s per run; "
        f"{report['cores']} cores",
        "| figure | ours | baseline | ratio | target met |",
        "|---|---|---|---|---|",
        f"| p50 ms, one typist | {one['p50_ms']} | {one_base['p50_ms']} | {ratio['p50_ms']} | {met['p50']} |",
        f"| p95 ms, one typist | {one['p95_ms']} | {one_base['p95_ms']} | {ratio['p95_ms']} | |",
        f"| p99 ms, one typist | {one['p99_ms']} | {one_base['p99_ms']} | {ratio['p99_ms']} | {met['p99']} |",
        f"| requests/s, one typist | {one['requests_per_second']} | {one_base['requests_per_second']} | | |",
        f"| requests/s at {c} typists | {top['requests_per_second']} | {top_base['requests_per_second']} "
        f"| {ratio['requests_per_second']} | {met['rps_at_8']} |",
        f"| p50 / p99 ms at {c} typists | {top['p50_ms']} / {top['p99_ms']} | {top_base['p50_ms']} / "
        f"{top_base['p99_ms']} | | |",
        f"| errors (all runs) | {sum(r['errors'] for r in ours['runs'])} | "
        f"{sum(r['errors'] for r in base['runs'])} | | |",
        f"| ingest pairs/s | {ours['ingest']['pairs_per_second']} | {base['ingest']['pairs_per_second']} "
        f"(first {report['baseline_ingest_sample']}) | {ratio['ingest_pairs_per_second']} | {met['ingest']} |",
        f"| cold start s | {ours['cold_start_s']} | {base['cold_start_s']} | {ratio['cold_start_s']} "
        f"| {met['cold_start']} |",
        f"| RSS MB per worker (Pss) | {ours['memory']['rss_mb_per_worker']} ({ours['memory']['pss_mb_per_worker']}) "
        f"| {base['memory']['rss_mb_per_worker']} ({base['memory']['pss_mb_per_worker']}) "
        f"| {ratio['rss_mb_per_worker']} | {met['memory']} |",
        f"| workers | {ours['memory']['workers']} | {base['memory']['workers']} | | |",
    ]
    if report.get("chart"):
        lines.append(f"chart: {report['chart']}")
    return "\n".join(lines)
