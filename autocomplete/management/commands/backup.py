"""manage.py backup DIR [--force]: a consistent copy of the database and the live index files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.backup import BackupError, backup_to


class Command(BaseCommand):
    help = (
        "Copy the database (a snapshot, safe while the server and workers run) and every live index "
        "file into DIR, with a manifest of their SHA-256 checksums written last."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path)
        parser.add_argument("--force", action="store_true", help="Replace the backup already in DIR.")

    def handle(self, *args: Any, **options: Any) -> None:
        directory: Path = options["directory"]
        try:
            manifest = backup_to(directory, force=options["force"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        size = sum(entry["size"] for entry in manifest["files"])
        self.stdout.write(
            self.style.SUCCESS(
                f"Backed up to {directory}: corpora {manifest['corpora']}, pairs {manifest['pairs']}, live builds "
                f"{len(manifest['live_builds'])} ({len(manifest['files'])} files, {size:,} bytes)"
            )
        )
