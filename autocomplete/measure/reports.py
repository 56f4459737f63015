"""The reports `manage.py evaluate` and `manage.py bench` print, as text tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .benchmark import run_at
from .evaluation import LEXICAL_BASELINE


def format_evaluation(report: dict[str, Any], fractions: Sequence[float]) -> str:
    """The evaluation report as the table `manage.py evaluate` prints."""
    lines: list[str] = []
    served = "hybrid+q" if "query_encoder" in report else "hybrid"
    results = {served: report, **report.get("baselines", {})}
    if "synonyms" in report:
        # The served ranking with the synonyms, then without them.
        results = {"synonyms": report, served: report["synonyms"]["without"], **report.get("baselines", {})}
    lines.append(
        f"encoder {report['encoder']}, k={report['k']}, {report['n_queries']} queries, "
        f"{report['n_corpus']} corpus questions"
    )
    if "ranking" in report:
        changed = ", ".join(f"{name}={value:g}" for name, value in sorted(report["ranking"].items()))
        lines.append(f"ranking changed from the served one: {changed}")
    if "query_encoder" in report:
        trained = report["query_encoder"]
        extra = trained.get("extra_questions", 0)
        lines.append(
            f"query encoder (+q): {trained['questions']} questions"
            + (f" ({extra} extra given with --query-encoder-questions)" if extra else "")
            + f", {trained['steps']} steps, seed "
            f"{trained['config']['seed']}, loss {trained['loss_before']:.3f} -> {trained['loss_after']:.3f}, "
            f"complete questions at cosine {trained['identity_cosine']:.3f} of their stored vectors"
        )
    header = f"{'method':<10}" + "".join(f"{f'hit@{f:g}':>10}" for f in fractions)
    lines.append(header + f"{'mean':>8}{'MRR@1.0':>9}{'keys':>7}")
    for method, result in results.items():
        cells = "".join(f"{result['hit_at_k'][str(f)]:>10.3f}" for f in fractions)
        mrr = result["mrr"].get(str(fractions[-1]), 0.0)
        lines.append(
            f"{method:<10}{cells}{result['mean_hit_at_k']:>8.3f}{mrr:>9.3f}{result['keystrokes_to_hit']:>7.3f}"
        )
    if "blend_ceiling" in report:
        ceiling = report["blend_ceiling"]
        cells = "".join(f"{ceiling['hit_at_k'][str(f)]:>10.3f}" for f in fractions)
        lines.append(f"{'ceiling':<10}{cells}{ceiling['mean_hit_at_k']:>8.3f}  (best lexical share per prefix)")
    lines.append(f"{'no suggestion (hybrid, share of queries)':<45}" + "".join(f"{f:>7g}" for f in fractions))
    rows = [("answerable queries (should be 0)", report["no_suggestion"])]
    if "offtopic" in report:
        rows.append(
            (
                f"off-topic queries, n={report['offtopic']['n_queries']} (should be 1)",
                report["offtopic"]["no_suggestion"],
            )
        )
    for label, shares in rows:
        lines.append(f"  {label:<43}" + "".join(f"{shares[str(f)]:>7.3f}" for f in fractions))
    if "latency" in report:
        latency = report["latency"]
        lines.append(
            f"ranking ms per query, median over {latency['n_prefixes']} prefixes: hybrid "
            f"{latency['hybrid_ms_median']:.3f}, semantic {latency['semantic_ms_median']:.3f}, added "
            f"{latency['added_ms_median']:.3f} (p90 {latency['added_ms_p90']:.3f})"
        )
    if "baselines" in report:
        lines.append(f"lexical = {LEXICAL_BASELINE}")
    return "\n".join(lines)


def format_bench(report: dict[str, Any]) -> str:
    """The figures as a Markdown table: ours, baseline, ratio, target met."""
    ours, base, ratio, met = report["ours"], report["baseline"], report["ratios"], report["targets"]

    one, one_base = run_at(ours, 1), run_at(base, 1)
    top, top_base = ours["runs"][-1], base["runs"][-1]
    c = top["concurrency"]
    lines = [
        f"encoder: {report['encoder']}; corpus: {report['corpus_size']} questions; {report['seconds']} s per run; "
        f"{report['cores']} cores",
        "| figure | ours | baseline | ratio | target met |",
        "|---|---|---|---|---|",
        f"| p50 ms, one typist | {one['p50_ms']} | {one_base['p50_ms']} | {ratio['p50_ms']} | {met['p50']} |",
        f"| p95 ms, one typist | {one['p95_ms']} | {one_base['p95_ms']} | {ratio['p95_ms']} | |",
        f"| p99 ms, one typist | {one['p99_ms']} | {one_base['p99_ms']} | {ratio['p99_ms']} | {met['p99']} |",
        f"| requests/s, one typist | {one['requests_per_second']} | {one_base['requests_per_second']} | | |",
        f"| requests/s at {c} typists | {top['requests_per_second']} | {top_base['requests_per_second']} "
        f"| {ratio['requests_per_second']} | {met['rps_at_8']} |",
        f"| p50 / p99 ms at {c} typists | {top['p50_ms']} / {top['p99_ms']} | {top_base['p50_ms']} / "
        f"{top_base['p99_ms']} | | |",
        f"| errors (all runs) | {sum(r['errors'] for r in ours['runs'])} | "
        f"{sum(r['errors'] for r in base['runs'])} | | |",
        f"| ingest pairs/s | {ours['ingest']['pairs_per_second']} | {base['ingest']['pairs_per_second']} "
        f"(first {report['baseline_ingest_sample']}) | {ratio['ingest_pairs_per_second']} | {met['ingest']} |",
        f"| cold start s | {ours['cold_start_s']} | {base['cold_start_s']} | {ratio['cold_start_s']} "
        f"| {met['cold_start']} |",
        f"| RSS MB per worker (Pss) | {ours['memory']['rss_mb_per_worker']} ({ours['memory']['pss_mb_per_worker']}) "
        f"| {base['memory']['rss_mb_per_worker']} ({base['memory']['pss_mb_per_worker']}) "
        f"| {ratio['rss_mb_per_worker']} | {met['memory']} |",
        f"| workers | {ours['memory']['workers']} | {base['memory']['workers']} | | |",
    ]
    filtered = ours.get("filtered")
    if filtered:
        # Ratios to unfiltered requests on the same server, paired prefix by prefix.
        lines += [
            "",
            "| tags=, one typist, ours | p50 ms | p99 ms | p50 / unfiltered | target met |",
            "|---|---|---|---|---|",
        ]
        for name, run in filtered["runs"].items():
            tags = filtered["tags"].get(name, "(none)")
            share = filtered["p50_ratio"].get(name, 1.0)
            lines.append(
                f"| {name}: {tags} | {run['p50_ms']} | {run['p99_ms']} | {share} | "
                f"{met.get('filtered', '') if name != 'unfiltered' else ''} |"
            )
    if report.get("chart"):
        lines.append(f"chart: {report['chart']}")
    return "\n".join(lines)
