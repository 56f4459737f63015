"""manage.py restore DIR [--force]: verify a backup, then make it this deployment's data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.backup import BackupError, restore_from


class Command(BaseCommand):
    help = (
        "Verify the backup in DIR (manifest and every checksum; nothing changes if one fails), then "
        "put its index files in place, replace the database with it and migrate it. Stop the server "
        "and the workers first."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--force", action="store_true", help="Replace a database that already holds corpora.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = restore_from(options["directory"], force=options["force"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"corpora: {report.corpora}")
        self.stdout.write(f"pairs: {report.pairs}")
        self.stdout.write(f"live builds: {', '.join(report.live_builds) or 'none'}")
        if report.migrations_applied:
            self.stdout.write(f"migrations applied: {', '.join(report.migrations_applied)}")
        self.stdout.write(self.style.SUCCESS(f"Restored from {options['directory']}"))
