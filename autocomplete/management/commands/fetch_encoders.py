"""manage.py fetch_encoders [KEY ...] [--to DIR]: save models from the hub for offline use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.encoder_registry import encoder_registry


class Command(BaseCommand):
    help = (
        "On a machine that reaches the Hugging Face hub, download encoders into local "
        "directories; copy them to the server and point AUTOCOMPLETE_<KEY>_PATH at them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("keys", nargs="*", default=["ivysaur", "gist-small"])
        parser.add_argument("--to", type=Path, help="Target directory (one key) or parent (default models/).")

    def handle(self, *args: Any, **options: Any) -> None:
        from sentence_transformers import SentenceTransformer

        registry = encoder_registry()
        for key in options["keys"]:
            spec = registry.spec(key)
            target = (
                options["to"]
                if options["to"] and len(options["keys"]) == 1
                else ((options["to"] or Path("models")) / key)
            )
            try:
                SentenceTransformer(spec.hub_id, device="cpu").save(str(target))
            except Exception as exc:  # noqa: BLE001 - network and hub errors alike
                raise CommandError(f"Could not download {spec.hub_id}: {exc}") from exc
            self.stdout.write(self.style.SUCCESS(f"{spec.name} saved to {target}; set {spec.env_var}={target}"))
