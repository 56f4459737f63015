"""manage.py evaluate: suggestion quality on labelled data, as the visitor types (see README)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from autocomplete.encoding import encoder_registry
from autocomplete.evaluation import (
    DEFAULT_FRACTIONS,
    EvaluationDataError,
    added_latency,
    blend_ceiling,
    build_space,
    evaluate,
    load_corpus,
    load_offtopic,
    load_queries,
    offtopic_silence,
    stderr_progress,
)
from embeddings.encoders import EncoderError
from embeddings.index import set_threads

LEXICAL_BASELINE = "prefix-aware IDF keyword matching (embeddings/lexical.py), no vectors"


def _fractions(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise CommandError(f"--fractions must be numbers like 0.25,0.5 (got {text!r}).") from exc
    if not values or any(not 0 < value <= 1 for value in values):
        raise CommandError("--fractions must lie in (0, 1].")
    return values


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
        parser.add_argument("--encoder", default=None, help="Encoder key (default: AUTOCOMPLETE_DEFAULT_ENCODER).")
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
        parser.add_argument("--json", action="store_true", help="One JSON object on stdout.")
        parser.add_argument(
            "--cache-dir",
            type=Path,
            default=None,
            help="Where corpus embeddings are cached (default: VAR_DIR/eval-cache).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not 1 <= options["k"] <= settings.AUTOCOMPLETE_MAX_K:
            raise CommandError(f"--k must be between 1 and {settings.AUTOCOMPLETE_MAX_K}.")
        fractions = _fractions(options["fractions"])
        key = options["encoder"] or settings.AUTOCOMPLETE_DEFAULT_ENCODER
        try:
            encoder = encoder_registry().get(key)
            corpus = load_corpus(options["corpus_csv"], options["distractors_csv"])
            queries = load_queries(options["queries_csv"], corpus, split=options["split"])
            offtopic = load_offtopic(options["offtopic"]) if options["offtopic"] else None
        except (EncoderError, EvaluationDataError, OSError) as exc:
            raise CommandError(str(exc)) from exc
        if not queries:
            raise CommandError(f"No queries in split '{options['split']}'.")
        cache_dir = options["cache_dir"] or Path(settings.VAR_DIR) / "eval-cache"
        space = build_space(encoder, corpus, cache_dir=cache_dir)
        methods = ["hybrid", "semantic", "lexical"] if options["baselines"] else ["hybrid"]
        results = {
            method: evaluate(
                space,
                encoder,
                queries,
                k=options["k"],
                fractions=fractions,
                method=method,
                progress=stderr_progress(method),
            )
            for method in methods
        }
        report: dict[str, Any] = {
            "encoder": key,
            "k": options["k"],
            "n_queries": len(queries),
            "n_corpus": len(corpus.questions),
            **results["hybrid"],
        }
        if options["baselines"]:
            report["baselines"] = {"semantic": results["semantic"], "lexical": results["lexical"]}
            report["lexical_baseline"] = LEXICAL_BASELINE
        if offtopic is not None:
            report["offtopic"] = {
                "n_queries": len(offtopic),
                "no_suggestion": offtopic_silence(space, encoder, offtopic, k=options["k"], fractions=fractions),
            }
        if options["blend_ceiling"]:
            print("blend ceiling: ranking every prefix at each lexical share ...", file=sys.stderr, flush=True)
            report["blend_ceiling"] = blend_ceiling(space, encoder, queries, k=options["k"], fractions=fractions)
        if options["latency"]:
            print("timing hybrid and semantic ranking ...", file=sys.stderr, flush=True)
            # Timed as a serving worker runs (autocomplete/warmup.py): faiss on the configured
            # threads, one by default; idle OpenMP threads would otherwise blur the comparison.
            set_threads(settings.AUTOCOMPLETE_ENCODER_THREADS or 1)
            report["latency"] = added_latency(space, encoder, queries, k=options["k"], fractions=fractions)
        if options["json"]:
            self.stdout.write(json.dumps(report))
        else:
            self._table(report, results, fractions)

    def _table(self, report: dict[str, Any], results: dict[str, dict[str, Any]], fractions: list[float]) -> None:
        self.stdout.write(
            f"encoder {report['encoder']}, k={report['k']}, {report['n_queries']} queries, "
            f"{report['n_corpus']} corpus questions"
        )
        header = f"{'method':<10}" + "".join(f"{f'hit@{f:g}':>10}" for f in fractions)
        self.stdout.write(header + f"{'mean':>8}{'MRR@1.0':>9}{'keys':>7}")
        for method, result in results.items():
            cells = "".join(f"{result['hit_at_k'][str(f)]:>10.3f}" for f in fractions)
            mrr = result["mrr"].get(str(fractions[-1]), 0.0)
            self.stdout.write(
                f"{method:<10}{cells}{result['mean_hit_at_k']:>8.3f}{mrr:>9.3f}{result['keystrokes_to_hit']:>7.3f}"
            )
        if "blend_ceiling" in report:
            ceiling = report["blend_ceiling"]
            cells = "".join(f"{ceiling['hit_at_k'][str(f)]:>10.3f}" for f in fractions)
            self.stdout.write(
                f"{'ceiling':<10}{cells}{ceiling['mean_hit_at_k']:>8.3f}  (best lexical share per prefix)"
            )
        self.stdout.write(f"{'no suggestion (hybrid, share of queries)':<45}" + "".join(f"{f:>7g}" for f in fractions))
        rows = [("answerable queries (should be 0)", results["hybrid"]["no_suggestion"])]
        if "offtopic" in report:
            rows.append(
                (
                    f"off-topic queries, n={report['offtopic']['n_queries']} (should be 1)",
                    report["offtopic"]["no_suggestion"],
                )
            )
        for label, shares in rows:
            self.stdout.write(f"  {label:<43}" + "".join(f"{shares[str(f)]:>7.3f}" for f in fractions))
        if "latency" in report:
            latency = report["latency"]
            self.stdout.write(
                f"ranking ms per query, median over {latency['n_prefixes']} prefixes: hybrid "
                f"{latency['hybrid_ms_median']:.3f}, semantic {latency['semantic_ms_median']:.3f}, added "
                f"{latency['added_ms_median']:.3f} (p90 {latency['added_ms_p90']:.3f})"
            )
        if "baselines" in report:
            self.stdout.write(f"lexical = {LEXICAL_BASELINE}")
