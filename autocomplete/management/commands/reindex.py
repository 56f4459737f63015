"""manage.py reindex SLUG [--encoder KEY]: rebuild a corpus's index from its stored pairs."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.builds import IndexWriteError
from autocomplete.ingest import reindex
from autocomplete.models import Corpus
from embeddings.encoders import EncoderError


class Command(BaseCommand):
    help = "Rebuild a corpus's index for one encoder (the live index keeps serving meanwhile)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("corpus")
        parser.add_argument("--encoder", help="Encoder key (default: the corpus's default).")

    def handle(self, *args: Any, **options: Any) -> None:
        corpus = Corpus.objects.filter(slug=options["corpus"]).first()
        if corpus is None:
            raise CommandError(f"Unknown corpus '{options['corpus']}'.")
        try:
            build = reindex(corpus, encoder_key=options["encoder"])
        except (EncoderError, IndexWriteError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(f"{corpus.slug}/{build.encoder}: {build.vector_count} vectors ({build.kind}) live")
        )
