"""manage.py gaps SLUG [--csv FILE] [--start DATE --end DATE]: group unanswered queries by meaning and store them."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from autocomplete.analytics import gap_queries
from autocomplete.gaps import GapInputError, gaps_now, read_query_counts
from autocomplete.models import AnalysisStatus, Corpus
from embeddings.encoders import EncoderError
from embeddings.query_groups import DEFAULT_SIMILARITY

DEFAULT_DAYS = 30


class Command(BaseCommand):
    help = "Group a corpus's unanswered queries by meaning (content gaps), as the admin's gaps page shows them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("corpus")
        parser.add_argument(
            "--csv",
            type=Path,
            help="CSV of query[,count] (a support log or export); without it, the range's settled searches that "
            "found no suggestion or no choice.",
        )
        parser.add_argument("--start", type=date.fromisoformat, help="First day covered (default: 30 days ago).")
        parser.add_argument("--end", type=date.fromisoformat, help="Last day covered (default: today).")
        parser.add_argument(
            "--similarity",
            type=float,
            default=DEFAULT_SIMILARITY,
            help=f"Mean cosine above which groups merge (default {DEFAULT_SIMILARITY}; higher: more, tighter groups).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        corpus = Corpus.objects.filter(slug=options["corpus"]).first()
        if corpus is None:
            raise CommandError(f"Unknown corpus '{options['corpus']}'.")
        end = options["end"] or timezone.localdate()
        start = options["start"] or end - timedelta(days=DEFAULT_DAYS - 1)
        path: Path | None = options["csv"]
        try:
            if path is None:
                queries, source = gap_queries(corpus, start, end), "search events"
            else:
                queries, source = read_query_counts(path.read_bytes()), path.name
            report = gaps_now(
                corpus, start=start, end=end, queries=queries, source=source, similarity=options["similarity"]
            )
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        except (GapInputError, EncoderError) as exc:
            raise CommandError(str(exc)) from exc
        if report.status != AnalysisStatus.DONE:
            raise CommandError(report.error)
        self.stdout.write(
            f"{corpus.slug} {start}..{end}: {report.wordings} distinct queries ({report.searches} searches) "
            f"in {len(report.groups)} groups, {report.duration_seconds} s with {report.encoder}"
        )
        for group in report.groups:
            nearest = group["nearest_question"] or "—"
            self.stdout.write(f"{group['size']:>7}  {group['typical']}  [nearest: {nearest}]")
