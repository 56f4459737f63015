"""manage.py import_keys: known wordings of a corpus's questions (CSV query,target_id) as keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.keys import KeyImportError, import_keys_file
from autocomplete.models import Corpus


class Command(BaseCommand):
    help = (
        "Import a CSV of known wordings (columns query,target_id; target_id is the pair's id in the corpus "
        "file, or its number in the admin) as keys of a corpus's pairs, e.g. from a support-ticket log."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--corpus", required=True, help="The corpus's slug.")

    def handle(self, *args: Any, **options: Any) -> None:
        corpus = Corpus.objects.filter(slug=options["corpus"]).first()
        if corpus is None:
            known = ", ".join(Corpus.objects.values_list("slug", flat=True)) or "none yet"
            raise CommandError(f"Unknown corpus '{options['corpus']}' (known: {known}).")
        try:
            added = import_keys_file(corpus, options["file"])
        except (KeyImportError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Imported {added} new key{'s' if added != 1 else ''} into corpus '{corpus.slug}'.")
