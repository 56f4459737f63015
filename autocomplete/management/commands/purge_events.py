"""manage.py purge_events: delete search events older than AUTOCOMPLETE_EVENT_RETENTION_DAYS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from autocomplete.conf import app_settings
from autocomplete.events import purge_old_events


class Command(BaseCommand):
    help = (
        "Delete search events older than the retention (AUTOCOMPLETE_EVENT_RETENTION_DAYS); the tasks "
        "worker also does it daily."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = purge_old_events()
        days = app_settings().event_retention_days
        self.stdout.write(f"Deleted {deleted} search event{'s' if deleted != 1 else ''} older than {days} days.")
