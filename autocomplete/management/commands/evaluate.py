"""manage.py evaluate: suggestion quality on labelled data, as the visitor types (docs/quality.md)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.conf import app_settings
from autocomplete.controls import SynonymFileError, synonym_map_from_csv
from autocomplete.encoder_registry import encoder_registry
from autocomplete.management.commands.train_query_encoder import read_questions
from autocomplete.measure.evaluation import (
    DEFAULT_FRACTIONS,
    EvalCorpus,
    EvalQuery,
    EvaluationDataError,
    EvaluationRequest,
    build_space,
    evaluation_report,
    learned_keys,
    load_corpus,
    load_offtopic,
    load_queries,
    trained_query_encoder,
)
from autocomplete.measure.reports import format_evaluation
from embeddings.encoders import EncoderError
from embeddings.query_encoder import QueryEncoderError, TrainingConfig
from embeddings.ranking import DEFAULT as DEFAULT_RANKING
from embeddings.ranking import RankingParams
from embeddings.synonyms import NO_SYNONYMS


def _fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CommandError(f"--fractions must be numbers like 0.25,0.5 (got {text!r}).") from exc
    if not values or any(not 0 < value <= 1 for value in values):
        raise CommandError("--fractions must lie in (0, 1].")
    return values


def _ranking(settings: Sequence[str]) -> RankingParams:
    """The served ranking with each NAME=VALUE of `--ranking` changed."""
    names = sorted(field.name for field in dataclasses.fields(RankingParams))
    changes: dict[str, Any] = {}
    for setting in settings:
        name, _, value = setting.partition("=")
        name = name.strip()
        if name not in names:
            raise CommandError(f"--ranking {setting!r}: no such field; one of {', '.join(names)}.")
        # Each field's type is that of its default (int or float).
        kind = type(getattr(DEFAULT_RANKING, name))
        try:
            changes[name] = kind(value)
        except ValueError as exc:
            raise CommandError(f"--ranking {setting!r}: {name} takes a {kind.__name__}.") from exc
    return dataclasses.replace(DEFAULT_RANKING, **changes)


def _learned(options: dict[str, Any], corpus: EvalCorpus) -> list[EvalQuery] | None:
    """The queries to learn keys from; never ones that are also scored."""
    path: Path | None = options["learn_from"]
    if path is None:
        return None
    splits = {options["split"], options["learn_split"]}
    if path.resolve() == options["queries_csv"].resolve() and (len(splits) == 1 or "all" in splits):
        raise CommandError(
            "--learn-from would learn from the queries it scores: pick another --learn-split than --split "
            "(e.g. --learn-split dev --split test)."
        )
    return load_queries(path, corpus, split=options["learn_split"])


class Command(BaseCommand):
    help = "Measure hit@k, MRR and keystrokes-to-hit of the live ranking on a labelled query set."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--corpus-csv", type=Path, required=True)
        parser.add_argument("--queries-csv", type=Path, required=True)
        parser.add_argument(
            "--distractors-csv",
            type=Path,
            action="extend",
            nargs="+",
            default=[],
            help="Adds its questions to the corpus; never a target. Takes several paths; repeatable.",
        )
        parser.add_argument("--encoder", default=None, help="Encoder key (default: the DEFAULT_ENCODER setting).")
        parser.add_argument("--k", type=int, default=5)
        parser.add_argument("--split", choices=["all", "dev", "test"], default="all")
        parser.add_argument("--fractions", default=",".join(str(f) for f in DEFAULT_FRACTIONS))
        parser.add_argument(
            "--baselines", action="store_true", help="Also measure plain semantic and plain lexical ranking."
        )
        parser.add_argument(
            "--offtopic",
            type=Path,
            default=None,
            help="Off-topic or gibberish queries, one per line: report the share left with no suggestion.",
        )
        parser.add_argument(
            "--latency",
            action="store_true",
            help="Also time hybrid against plain semantic ranking per query (embedding excluded).",
        )
        parser.add_argument(
            "--blend-ceiling",
            action="store_true",
            help="Also report hit@k with each prefix choosing its own lexical share (0-1): bounds any re-weighting.",
        )
        parser.add_argument(
            "--synonyms",
            type=Path,
            default=None,
            help="A synonyms CSV (terms, one_way_to) as the admin imports it: report with and without them.",
        )
        parser.add_argument(
            "--train-query-encoder",
            action="store_true",
            help="Train a query encoder on the corpus's own questions (cached) and serve queries with it.",
        )
        parser.add_argument("--query-encoder-steps", type=int, default=TrainingConfig.steps)
        parser.add_argument(
            "--query-encoder-questions",
            type=Path,
            action="extend",
            nargs="+",
            default=[],
            help="Also train the query encoder on these questions (a CSV's question column, or lines), "
            "as train_query_encoder --questions does. Takes several paths; repeatable.",
        )
        parser.add_argument("--seed", type=int, default=TrainingConfig.seed, help="Seed of the query encoder training.")
        parser.add_argument(
            "--learn-from",
            type=Path,
            default=None,
            help="Replay this query file's --learn-split queries as choices of their targets (keys) before measuring.",
        )
        parser.add_argument("--learn-split", choices=["all", "dev", "test"], default="dev")
        parser.add_argument(
            "--ranking",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="Measure the hybrid ranking with this field of RankingParams changed (embeddings/ranking.py), "
            "e.g. lexical_share=0.2; repeatable. Without it, the served ranking.",
        )
        parser.add_argument("--json", action="store_true", help="One JSON object on stdout.")
        parser.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help="Where corpus embeddings are cached (default: VAR_DIR/eval-cache).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        conf = app_settings()
        if not 1 <= options["k"] <= conf.max_k:
            raise CommandError(f"--k must be between 1 and {conf.max_k}.")
        fractions = _fractions(options["fractions"])
        ranking = _ranking(options["ranking"])
        key = options["encoder"] or conf.default_encoder
        try:
            encoder = encoder_registry().get(key)
            corpus = load_corpus(options["corpus_csv"], options["distractors_csv"])
            queries = load_queries(options["queries_csv"], corpus, split=options["split"])
            offtopic = load_offtopic(options["offtopic"]) if options["offtopic"] else None
            learned = _learned(options, corpus)
            synonyms = synonym_map_from_csv(options["synonyms"].read_bytes()) if options["synonyms"] else NO_SYNONYMS
        except (EncoderError, EvaluationDataError, SynonymFileError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if not queries:
            raise CommandError(f"No queries in split '{options['split']}'.")
        cache_dir = options["cache_dir"] or conf.var_dir / "eval-cache"
        space = build_space(encoder, corpus, cache_dir=cache_dir, synonyms=synonyms)
        if learned is not None:
            space = space.with_keys(learned_keys(encoder, space, learned))
            self.stderr.write(f"learned {len(learned)} queries of split '{options['learn_split']}' as keys")
        query_encoder = None
        if options["train_query_encoder"]:
            try:
                config = TrainingConfig(steps=options["query_encoder_steps"], seed=options["seed"])
                extra = [q for path in options["query_encoder_questions"] for q in read_questions(path)]
                query_encoder = trained_query_encoder(
                    encoder, corpus, cache_dir=cache_dir, config=config, extra_questions=extra
                )
            except (EncoderError, QueryEncoderError) as exc:
                raise CommandError(str(exc)) from exc
        request = EvaluationRequest(
            encoder_key=key,
            k=options["k"],
            fractions=fractions,
            baselines=options["baselines"],
            offtopic=offtopic,
            blend_ceiling=options["blend_ceiling"],
            latency=options["latency"],
            synonyms=synonyms,
            params=ranking,
        )
        report = evaluation_report(space, encoder, corpus, queries, request, query_encoder=query_encoder)
        self.stdout.write(json.dumps(report) if options["json"] else format_evaluation(report, fractions))
