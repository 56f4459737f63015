"""manage.py audit_reachability SLUG: the pairs visitors typing their own question would not be offered."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.models import AnalysisStatus, Corpus
from autocomplete.reachability import (
    DEFAULT_K,
    DEFAULT_REACH_LIMIT,
    DEFAULT_SHADOW_SIMILARITY,
    AuditOptions,
    audit_now,
)
from autocomplete.search import SearchError


class Command(BaseCommand):
    help = "Audit which pairs reach the top k only late (or never) from their own question, or are shadowed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("corpus")
        parser.add_argument("--encoder", help="Encoder key (default: the one that answers the corpus's visitors).")
        parser.add_argument("--k", type=int, default=DEFAULT_K, help=f"Top k to reach (default {DEFAULT_K}).")
        parser.add_argument(
            "--shadow-similarity",
            type=float,
            default=DEFAULT_SHADOW_SIMILARITY,
            help=f"Cosine from which two questions count as near-identical (default {DEFAULT_SHADOW_SIMILARITY}).",
        )
        parser.add_argument(
            "--reach-limit",
            type=float,
            default=DEFAULT_REACH_LIMIT,
            help=f"Report pairs needing more than this share of their question (default {DEFAULT_REACH_LIMIT}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        corpus = Corpus.objects.filter(slug=options["corpus"]).first()
        if corpus is None:
            raise CommandError(f"Unknown corpus '{options['corpus']}'.")
        if options["k"] < 1:
            raise CommandError("--k must be 1 or more.")
        audit_options = AuditOptions(
            k=options["k"], shadow_similarity=options["shadow_similarity"], reach_limit=options["reach_limit"]
        )
        try:
            audit = audit_now(corpus, encoder=options["encoder"], options=audit_options)
        except SearchError as exc:
            raise CommandError(f"{exc} Index the corpus first (manage.py ingest or reindex).") from exc
        if audit.status != AnalysisStatus.DONE:
            raise CommandError(audit.error)
        self.stdout.write(
            f"{corpus.slug}/{audit.encoder}: {len(audit.findings)} of {audit.pair_count} pairs listed "
            f"({audit.duration_seconds} s)"
        )
        for finding in audit.findings:
            reach = "never" if finding["reach"] is None else f"from {round(finding['reach'] * 100)} %"
            shadow = finding["shadowed_by"]
            note = f"; shadowed by #{shadow['id']} (cosine {shadow['cosine']})" if shadow else ""
            self.stdout.write(f"#{finding['id']}  top {audit.k} {reach}{note}  {finding['question']}")
