"""manage.py train_query_encoder SLUG: tune a query encoder for a corpus's encoder and serve with it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.conf import app_settings
from autocomplete.models import Corpus
from autocomplete.query_encoders import train_for_corpus
from embeddings.encoders import EncoderError
from embeddings.query_encoder import QueryEncoderError


def read_questions(path: Path) -> list[str]:
    """A CSV file's `question` column, or a text file's non-empty lines."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            if path.suffix.lower() != ".csv":
                return [line.strip() for line in handle if line.strip()]
            reader = csv.DictReader(handle)
            if "question" not in (reader.fieldnames or []):
                raise CommandError(f"{path} has no 'question' column: give a CSV with one, or a file of lines.")
            return [row["question"].strip() for row in reader if (row["question"] or "").strip()]
    except OSError as exc:
        raise CommandError(f"{path} cannot be read: {exc.strerror or exc}.") from exc


class Command(BaseCommand):
    help = (
        "Train a query encoder for a corpus (its own questions, plus any extra question files) so that "
        "half-typed queries land near the questions they lead to; serving uses it at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("corpus")
        parser.add_argument("--encoder", help="The corpus encoder it is trained for (default: the corpus's default).")
        parser.add_argument("--steps", type=int, default=None, help="Training steps (default: QUERY_ENCODER_STEPS).")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument(
            "--questions",
            type=Path,
            action="extend",
            nargs="+",
            default=[],
            help="Extra question files (CSV with a 'question' column, or one per line); repeatable.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        corpus = Corpus.objects.filter(slug=options["corpus"]).first()
        if corpus is None:
            raise CommandError(f"Unknown corpus '{options['corpus']}'.")
        steps = options["steps"] or app_settings().query_encoder_steps
        if steps < 1:
            raise CommandError("--steps must be at least 1.")
        extra = [question for path in options["questions"] for question in read_questions(path)]
        key = options["encoder"] or corpus.default_encoder
        if not corpus.index_builds.filter(encoder=key, is_live=True).exists():
            raise CommandError(f"Corpus '{corpus.slug}' has no live {key} index: ingest or reindex it first.")

        def progress(stage: str, done: int, total: int) -> None:
            if stage == "training" and (done == total or done % max(1, total // 10) == 0):
                self.stderr.write(f"step {done}/{total}")

        try:
            record = train_for_corpus(
                corpus,
                encoder_key=key,
                steps=steps,
                seed=options["seed"],
                extra_questions=extra,
                extra_files=[str(path) for path in options["questions"]],
                progress=progress,
            )
        except (EncoderError, QueryEncoderError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"{corpus.slug}/{key}: query encoder live ({record.questions} questions, {record.steps} steps, "
                f"{record.train_seconds:.0f} s; prefix loss {record.loss_before:.3f} -> {record.loss_after:.3f}, "
                f"complete questions at cosine {record.identity_cosine:.3f} of their stored vectors)"
            )
        )
