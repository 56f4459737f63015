"""manage.py ingest FILE --corpus SLUG [--encoder KEY] [--name NAME] [--replace] [--format F]"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import slugify

from autocomplete.builds import IndexWriteError
from autocomplete.conf import app_settings
from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus
from autocomplete.parsing import FORMATS, ParseError, parse_qa_file
from embeddings.encoders import EncoderError


class Command(BaseCommand):
    help = "Load QA pairs from a CSV, TSV, JSON or JSONL file into a corpus and rebuild its index."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--corpus", required=True, help="Corpus slug; created if it does not exist.")
        parser.add_argument("--name", help="Display name for a new corpus (default: from the slug).")
        parser.add_argument("--encoder", help="Encoder key to index with (default: the corpus's).")
        parser.add_argument("--format", choices=FORMATS, help="Override format detection.")
        parser.add_argument(
            "--replace", action="store_true", help="Make the corpus exactly the file (pairs not in it are removed)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        if not path.is_file():
            raise CommandError(f"{path} is not a file.")
        slug = options["corpus"]
        if slugify(slug) != slug:
            raise CommandError(f"'{slug}' is not a valid slug; try '{slugify(slug)}'.")
        try:
            parsed = parse_qa_file(path.read_bytes(), filename=path.name, format=options["format"])
        except ParseError as exc:
            raise CommandError(f"{path}: {exc}") from exc
        corpus = Corpus.objects.filter(slug=slug).first()
        created = corpus is None
        if corpus is None:
            corpus = Corpus(slug=slug, name=options["name"] or slug.replace("-", " ").capitalize())
            corpus.default_encoder = options["encoder"] or app_settings().default_encoder
        try:
            if created:
                corpus.save()
            report = ingest_parsed(
                corpus, parsed, encoder_key=options["encoder"], mode="replace" if options["replace"] else "merge"
            )
        except (EncoderError, IndexWriteError) as exc:
            if created:
                corpus.delete()
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{path.name} ({report.format}) -> corpus '{slug}', encoder '{report.encoder}'")
        self.stdout.write(f"added: {report.added}")
        self.stdout.write(f"updated: {report.updated}")
        self.stdout.write(f"unchanged: {report.unchanged}")
        self.stdout.write(f"removed: {report.removed}")
        self.stdout.write(f"rejected: {len(report.rejected)}")
        for rejection in report.rejected:
            self.stdout.write(f"  line {rejection.line}: {rejection.reason}")
        if report.removal_note:
            self.stdout.write(self.style.WARNING(report.removal_note))
        self.stdout.write(f"vectors: {report.embedded} embedded, {report.reused} reused")
        build = report.index_build
        if build is None:
            self.stdout.write("index: unchanged (already live)")
        else:
            self.stdout.write(
                self.style.SUCCESS(f"index: {build.vector_count} vectors ({build.kind}) live as {build.file_name}")
            )
