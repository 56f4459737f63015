"""manage.py export_onnx [KEY ...]: export encoders to ONNX once, before serving processes start."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.catalog import catalog
from autocomplete.encoder_registry import encoder_registry
from embeddings.encoders import EncoderError


class Command(BaseCommand):
    help = (
        "Load (and so export, for the ONNX backends) the given encoders, or every encoder with a "
        "live index, so that serving workers never export concurrently."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("keys", nargs="*")

    def handle(self, *args: Any, **options: Any) -> None:
        keys = options["keys"] or sorted({key for entry in catalog().corpora.values() for key in entry.live})
        registry = encoder_registry()
        for key in keys:
            started = time.perf_counter()
            try:
                encoder = registry.get(key)
            except EncoderError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"{key}: {encoder.backend_label} ready in {time.perf_counter() - started:.1f} s")
