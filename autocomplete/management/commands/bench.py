"""manage.py bench [--corpus-size N] [--concurrency C ...] [--seconds S] [--encoder KEY] [--json] [--chart PATH]"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.measure.benchmark import BenchError, Options, run_bench
from autocomplete.measure.reports import format_bench

DEFAULT_CHART = Path(settings.BASE_DIR) / "docs" / "latency.png"


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
        parser.add_argument(
            "--threads", type=int, help="Threads per gunicorn worker for our stack; 1 = sync workers (default: config)."
        )
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
            threads=options["threads"],
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
            self.stdout.write(format_bench(report))
