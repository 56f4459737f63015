"""Offline evaluation of suggestion quality on labelled QA data, through the live ranking path.

Queries are cut to a fraction of their characters, as if the visitor were still typing, and
ranked by `search.rank` over an in-memory SearchSpace: nothing is written to the database.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from embeddings.encoders import Encoder, local_model_dir
from embeddings.keys import KeyIndex
from embeddings.lexical import LexicalIndex
from embeddings.query_encoder import (
    QUERY_ENCODER_FORMAT,
    TrainingConfig,
    load_query_encoder,
    read_manifest,
    read_manifest_result,
    train_query_encoder,
)
from embeddings.ranking import DEFAULT as DEFAULT_RANKING
from embeddings.ranking import RankingParams
from embeddings.synonyms import NO_SYNONYMS, SynonymMap
from embeddings.vector_index import VectorIndex, set_threads

from ..conf import app_settings
from ..search import METHODS, SearchSpace, embed_query, encode_queries, rank

logger = logging.getLogger(__name__)

DEFAULT_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
LEXICAL_BASELINE = "prefix-aware IDF keyword matching (embeddings/lexical.py), no vectors"


class EvaluationDataError(ValueError):
    """An input file is missing columns or refers to unknown ids."""


@dataclass(frozen=True)
class EvalQuery:
    text: str
    targets: frozenset[int]  # positions in the corpus


@dataclass
class EvalCorpus:
    questions: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    position_of: dict[str, int] = field(default_factory=dict)  # target corpus ids only
    n_own: int = 0


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in required if name not in (reader.fieldnames or [])]
        if missing:
            raise EvaluationDataError(f"{path} lacks column(s) {', '.join(missing)}.")
        return list(reader)


def load_corpus(corpus_csv: Path, distractor_csvs: Sequence[Path] = ()) -> EvalCorpus:
    """The corpus's questions, then each distractor file's (never a target)."""
    corpus = EvalCorpus()
    for row in _read_csv(corpus_csv, ("id", "question")):
        corpus.position_of[row["id"]] = len(corpus.questions)
        corpus.questions.append(row["question"])
        corpus.answers.append(row.get("answer", ""))
    corpus.n_own = len(corpus.questions)
    for path in distractor_csvs:
        for row in _read_csv(path, ("question",)):
            if row["question"].strip():
                corpus.questions.append(row["question"])
                corpus.answers.append(row.get("answer", ""))
    return corpus


def load_queries(queries_csv: Path, corpus: EvalCorpus, *, split: str = "all") -> list[EvalQuery]:
    """Distinct queries with all their acceptable targets, filtered on `split` when present."""
    rows = _read_csv(queries_csv, ("query", "target_id"))
    targets: dict[str, set[int]] = {}
    for row in rows:
        if split != "all" and row.get("split", split) != split:
            continue
        position = corpus.position_of.get(row["target_id"])
        if position is None:
            raise EvaluationDataError(f"{queries_csv}: target_id {row['target_id']!r} is not in the corpus.")
        targets.setdefault(row["query"], set()).add(position)
    return [EvalQuery(text, frozenset(ids)) for text, ids in targets.items()]


def corpus_vectors(encoder: Encoder, questions: Sequence[str], *, cache_dir: Path | None) -> np.ndarray:
    """Embed the corpus once per encoder and text set; cached on disk between runs."""
    digest = hashlib.sha256("\n".join(questions).encode()).hexdigest()[:16]
    space = encoder.vector_space.replace("/", "-")
    path = cache_dir / f"{encoder.spec.key}-{space}-{digest}.npy" if cache_dir else None
    if path is not None and path.is_file():
        cached: np.ndarray = np.load(path)
        return cached
    started = time.perf_counter()
    vectors = encoder.encode(list(questions), batch_size=128)
    logger.info("Embedded %d questions in %.1f s", len(questions), time.perf_counter() - started)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    return vectors


def build_space(
    encoder: Encoder, corpus: EvalCorpus, *, cache_dir: Path | None, synonyms: SynonymMap = NO_SYNONYMS
) -> SearchSpace:
    """The corpus ready to rank, as a live build would serve it (with the corpus's synonyms, if any)."""
    vectors = corpus_vectors(encoder, corpus.questions, cache_dir=cache_dir)
    ids = list(range(len(corpus.questions)))
    index = VectorIndex.build(
        vectors,
        ids,
        encoder=encoder.spec.key,
        dimension=encoder.spec.dimension,
        ann_threshold=app_settings().ann_threshold,
        hnsw=app_settings().hnsw,
    )
    return SearchSpace(
        index,
        zip(ids, corpus.questions, corpus.answers, [""] * len(ids), strict=True),
        lexical=lambda pks, texts: LexicalIndex(pks, texts, synonyms=synonyms),
        synonyms=synonyms,
    )


def with_synonyms(space: SearchSpace, synonyms: SynonymMap) -> SearchSpace:
    """The same vectors and texts with the lexical index built with `synonyms`."""
    return SearchSpace(
        space.index,
        zip(space.ids, space.questions, space.answers, space.urls, strict=True),
        lexical=lambda pks, texts: LexicalIndex(pks, texts, synonyms=synonyms),
        synonyms=synonyms,
    )


@dataclass(frozen=True)
class TrainedQueryEncoder:
    """A query encoder trained for an evaluated corpus, and what its training recorded."""

    encoder: Encoder
    summary: dict[str, Any]


def trained_query_encoder(
    encoder: Encoder,
    corpus: EvalCorpus,
    *,
    cache_dir: Path,
    config: TrainingConfig,
    extra_questions: Sequence[str] = (),
) -> TrainedQueryEncoder:
    """A query encoder trained on the corpus's own questions and any extra ones, cached by their
    content, the encoder and the recipe.

    The targets are the corpus vectors the evaluation searches (the served encoder's), as a
    deployment's are the stored ones; extra questions are embedded by the same encoder, as
    `manage.py train_query_encoder --questions` does.
    """
    conf = app_settings()
    threads = conf.encoder_threads or (os.cpu_count() or 1)
    questions = [*corpus.questions, *extra_questions]
    vectors = corpus_vectors(encoder, corpus.questions, cache_dir=cache_dir)
    if extra_questions:
        vectors = np.vstack([vectors, corpus_vectors(encoder, extra_questions, cache_dir=cache_dir)])
    recipe = json.dumps([QUERY_ENCODER_FORMAT, encoder.vector_space, asdict(config)], sort_keys=True)
    digest = hashlib.sha256((recipe + "\n" + "\n".join(questions)).encode()).hexdigest()[:16]
    directory = cache_dir / "query-encoders" / f"{encoder.spec.key}-{digest}"
    if read_manifest(directory) is None:
        print(f"training a query encoder on {len(questions)} questions ...", file=sys.stderr, flush=True)
        base = local_model_dir(encoder.spec, allow_download=conf.allow_download)
        train_query_encoder(
            base, questions, vectors, directory, config=config, progress=_training_progress, threads=threads
        )
    result = read_manifest_result(directory)
    model = load_query_encoder(encoder.spec, directory, backend=encoder.spec.backend, threads=threads)
    summary = asdict(result) | {"vector_space": model.vector_space, "extra_questions": len(extra_questions)}
    return TrainedQueryEncoder(model, summary)


def _training_progress(step: int, steps: int, loss: float) -> None:
    if step == steps or step % max(1, steps // 10) == 0:
        print(f"query encoder: step {step}/{steps}, loss {loss:.4f}", file=sys.stderr, flush=True)


def learned_keys(encoder: Encoder, space: SearchSpace, learned: Sequence[EvalQuery]) -> KeyIndex:
    """Keys from replayed choices: every learned query becomes a key of each of its targets.

    Each replayed query stands for as many page views as the threshold asks, as an imported
    wording does: a labelled set rarely repeats a query, so counting its rows would learn nothing.
    """
    rows = [(query.text, target) for query in learned for target in sorted(query.targets)]
    texts = [text for text, _ in rows]
    return KeyIndex(
        [target for _, target in rows],
        texts,
        encode_queries(encoder, texts).reshape(len(texts), -1),
        lexical_ids=space.lexical.ids,
    )


def cut(query: str, fraction: float) -> str:
    """The first max(1, round(len * fraction)) characters."""
    return query[: max(1, round(len(query) * fraction))]


def embedder(encoder: Encoder, texts: Iterable[str]) -> Callable[[str], np.ndarray]:
    """An `embed` for `rank` with `texts` embedded in batches up front and other texts on demand."""
    known = sorted(set(texts))
    vectors = dict(zip(known, encode_queries(encoder, known), strict=True))

    def embed(text: str) -> np.ndarray:
        vector = vectors.get(text)
        if vector is None:  # a text the ranking derives from the query (not a typed prefix)
            vector = vectors[text] = embed_query(encoder, text)
        return vector

    return embed


def evaluate(
    space: SearchSpace,
    encoder: Encoder,
    queries: Sequence[EvalQuery],
    *,
    k: int = 5,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    method: str = "hybrid",
    params: RankingParams = DEFAULT_RANKING,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """hit@k and MRR per fraction, their mean, and keystrokes to the first hit.

    `encoder` embeds the queries: the corpus's encoder, or a query encoder trained for it.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; one of {', '.join(METHODS)}.")
    embed = embedder(encoder, {q.text[:n] for q in queries for n in range(1, len(q.text) + 1)})
    hits = dict.fromkeys(fractions, 0.0)
    reciprocal = dict.fromkeys(fractions, 0.0)
    empty = dict.fromkeys(fractions, 0.0)
    keystrokes = 0.0
    for done, query in enumerate(queries, start=1):

        def ranks(prefix: str, query: EvalQuery = query) -> list[int] | None:
            ranked = rank(space, prefix, embed=embed, k=k, method=method, params=params)
            if not ranked:
                return None
            return [r for r, s in enumerate(ranked, start=1) if s.id in query.targets]

        for fraction in fractions:
            found = ranks(cut(query.text, fraction))
            empty[fraction] += found is None
            hits[fraction] += bool(found)
            reciprocal[fraction] += 1.0 / found[0] if found else 0.0
        keystrokes += next((n / len(query.text) for n in range(1, len(query.text) + 1) if ranks(query.text[:n])), 1.0)
        if progress:
            progress(done, len(queries))
    n = max(1, len(queries))
    hit_at_k = _shares(hits, n)
    return {
        "hit_at_k": hit_at_k,
        "mrr": _shares(reciprocal, n),
        "mean_hit_at_k": _mean(hit_at_k),
        "keystrokes_to_hit": round(keystrokes / n, 4),
        # Answerable queries that the cut-off leaves with no suggestion at all: its cost.
        "no_suggestion": _shares(empty, n),
    }


# The lexical shares the blend ceiling lets each prefix choose from: 0 (vectors alone) to 1.
CEILING_WEIGHTS = tuple(step / 10 for step in range(11))


def blend_ceiling(
    space: SearchSpace,
    encoder: Encoder,
    queries: Sequence[EvalQuery],
    *,
    k: int = 5,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    weights: Sequence[float] = CEILING_WEIGHTS,
    params: RankingParams = DEFAULT_RANKING,
) -> dict[str, object]:
    """hit@k if every typed prefix could pick its own lexical share of the blend, after the fact.

    An upper bound for any re-weighting of the two signals (a learned blend included): when even
    it stays below a target, the target needs a better signal, not better tuning. The cut-off is
    off (it can only remove hits); the candidates, completion and feedback are the served ones.
    """
    embed = embedder(encoder, {cut(q.text, f) for q in queries for f in fractions})
    grid = [
        replace(
            params,
            lexical_share=weight,
            short_query_shift=0.0,
            min_score=0.0,
            follow_score=0.0,
        )
        for weight in weights
    ]
    hits = dict.fromkeys(fractions, 0)
    for query in queries:
        for fraction in fractions:
            prefix = cut(query.text, fraction)
            hits[fraction] += any(
                any(s.id in query.targets for s in rank(space, prefix, embed=embed, k=k, params=params))
                for params in grid
            )
    hit_at_k = _shares(hits, len(queries))
    return {"weights": list(weights), "hit_at_k": hit_at_k, "mean_hit_at_k": _mean(hit_at_k)}


def _shares(counts: Mapping[float, float], n: int) -> dict[str, float]:
    """Each fraction's count over `n` queries, keyed as the JSON report keys it ("0.25")."""
    return {str(fraction): round(count / max(1, n), 4) for fraction, count in counts.items()}


def _mean(shares: dict[str, float]) -> float:
    return round(sum(shares.values()) / len(shares), 4)


def load_offtopic(path: Path) -> list[str]:
    """One query per line; blank lines are skipped."""
    with open(path, encoding="utf-8-sig") as handle:
        return [line.strip() for line in handle if line.strip()]


def offtopic_silence(
    space: SearchSpace,
    encoder: Encoder,
    texts: Sequence[str],
    *,
    k: int = 5,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    method: str = "hybrid",
    params: RankingParams = DEFAULT_RANKING,
) -> dict[str, float]:
    """Per fraction, the share of off-topic or gibberish queries that get no suggestion (the goal)."""
    silent = dict.fromkeys(fractions, 0)
    for fraction in fractions:
        prefixes = [cut(text, fraction) for text in texts]
        embed = embedder(encoder, prefixes)
        silent[fraction] = sum(not rank(space, p, embed=embed, k=k, method=method, params=params) for p in prefixes)
    return _shares(silent, len(texts))


def added_latency(
    space: SearchSpace,
    encoder: Encoder,
    queries: Sequence[EvalQuery],
    *,
    k: int = 5,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    repeats: int = 5,
    params: RankingParams = DEFAULT_RANKING,
) -> dict[str, float]:
    """Median ms per query of hybrid and of plain semantic ranking, query embedding excluded.

    Both embed once per keystroke, so the encoder's time is the same for both and left out; each
    prefix is timed `repeats` times per method, alternately, and its fastest run kept, which
    filters out pauses caused by other processes.
    """
    prefixes = sorted({cut(q.text, f) for q in queries for f in fractions})
    embed = embedder(encoder, prefixes)

    timings: dict[str, list[float]] = {"hybrid": [], "semantic": []}
    for prefix in prefixes:
        best = dict.fromkeys(timings, np.inf)
        for method in timings:  # warm: embeds the texts both methods ask for
            rank(space, prefix, embed=embed, k=k, method=method, params=params)
        for _ in range(repeats):
            for method in timings:
                started = time.perf_counter()
                rank(space, prefix, embed=embed, k=k, method=method, params=params)
                best[method] = min(best[method], time.perf_counter() - started)
        for method, seconds in best.items():
            timings[method].append(seconds * 1000)
    hybrid, semantic = np.asarray(timings["hybrid"]), np.asarray(timings["semantic"])
    added = hybrid - semantic
    return {
        "n_prefixes": len(prefixes),
        "hybrid_ms_median": round(float(np.median(hybrid)), 3),
        "semantic_ms_median": round(float(np.median(semantic)), 3),
        "added_ms_median": round(float(np.median(added)), 3),
        "added_ms_p90": round(float(np.percentile(added, 90)), 3),
    }


def stderr_progress(label: str) -> Callable[[int, int], None]:
    """Progress on stderr every 10 %, so --json keeps stdout clean."""

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            print(f"{label}: {done}/{total} queries", file=sys.stderr, flush=True)

    return report


@dataclass(frozen=True)
class EvaluationRequest:
    """What `manage.py evaluate` was asked to measure."""

    encoder_key: str
    k: int
    fractions: Sequence[float]
    baselines: bool = False
    offtopic: Sequence[str] | None = None
    blend_ceiling: bool = False
    latency: bool = False
    # Synonyms to measure: the report's figures are with them, `synonyms.without` without them.
    synonyms: SynonymMap = NO_SYNONYMS
    # The ranking to rank with (with and without a query encoder): the served one unless `--ranking` changes it.
    params: RankingParams = DEFAULT_RANKING


def evaluation_report(
    space: SearchSpace,
    encoder: Encoder,
    corpus: EvalCorpus,
    queries: Sequence[EvalQuery],
    request: EvaluationRequest,
    *,
    query_encoder: TrainedQueryEncoder | None = None,
) -> dict[str, Any]:
    """Every figure asked for, as the JSON report: the served ranking's at the top level.

    With a query encoder, the served ranking embeds queries with it; the baselines stay plain
    (semantic and lexical as without it), and the served ranking without it and plain semantic with
    it are added, so one run shows what it changed.
    """
    k, fractions = request.k, request.fractions
    served = query_encoder.encoder if query_encoder else encoder
    runs: dict[str, tuple[Encoder, str]] = {"served": (served, "hybrid")}
    if request.baselines:
        if query_encoder:
            runs |= {"hybrid": (encoder, "hybrid"), "semantic+q": (served, "semantic")}
        runs |= {"semantic": (encoder, "semantic"), "lexical": (encoder, "lexical")}
    params = request.params
    results = {
        name: evaluate(
            space,
            model,
            queries,
            k=k,
            fractions=fractions,
            method=method,
            params=params,
            progress=stderr_progress(name),
        )
        for name, (model, method) in runs.items()
    }
    report: dict[str, Any] = {
        "encoder": request.encoder_key,
        "k": k,
        "n_queries": len(queries),
        "n_corpus": len(corpus.questions),
        **results.pop("served"),
    }
    changed = {
        name: getattr(params, name)
        for name in (each.name for each in fields(params))
        if getattr(params, name) != getattr(DEFAULT_RANKING, name)
    }
    if changed:
        report["ranking"] = changed  # not the served ranking
    if request.synonyms:
        plain = with_synonyms(space, NO_SYNONYMS)
        report["synonyms"] = {
            "entries": len(request.synonyms.adds),
            "without": evaluate(
                plain, served, queries, k=k, fractions=fractions, params=params, progress=stderr_progress("plain")
            ),
        }
    if query_encoder:
        report["query_encoder"] = query_encoder.summary
    if request.baselines:
        report["baselines"] = results
        report["lexical_baseline"] = LEXICAL_BASELINE
    if request.offtopic is not None:
        report["offtopic"] = {
            "n_queries": len(request.offtopic),
            "no_suggestion": offtopic_silence(space, served, request.offtopic, k=k, fractions=fractions, params=params),
        }
    if request.blend_ceiling:
        print("blend ceiling: ranking every prefix at each lexical share ...", file=sys.stderr, flush=True)
        report["blend_ceiling"] = blend_ceiling(space, served, queries, k=k, fractions=fractions, params=params)
    if request.latency:
        print("timing hybrid and semantic ranking ...", file=sys.stderr, flush=True)
        # Timed as a serving worker runs (autocomplete/warmup.py): faiss on the configured
        # threads, one by default; idle OpenMP threads would otherwise blur the comparison.
        set_threads(app_settings().encoder_threads or 1)
        report["latency"] = added_latency(space, served, queries, k=k, fractions=fractions, params=params)
    return report
