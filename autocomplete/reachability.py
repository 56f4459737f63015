"""The reachability audit: pairs that visitors typing their own question would not be offered.

Each question is cut to fractions of its characters, as the evaluation cuts queries, and every cut
is ranked by `search.rank` on the corpus's loaded search space, so what is audited is what is
served. A pair is reported when reaching the top k takes more than `reach_limit` of its question
(or the whole question is not enough), or when another question is so close in meaning
(`shadow_similarity`) that the two compete for every query. Runs in a background task
(`request_audit`) or the `audit_reachability` command; prefixes are embedded in batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.utils import timezone
from django_tasks import task

from embeddings.encoders import Encoder
from embeddings.ranking import DEFAULT as DEFAULT_RANKING
from embeddings.ranking import embedding_text
from embeddings.typed_query import TypedQuery
from embeddings.vector_index import set_threads, thread_cap

from .measure.evaluation import DEFAULT_FRACTIONS, cut
from .models import AnalysisStatus, Corpus, ReachabilityAudit
from .search import Embed, SearchSpace, Suggestion, encode_queries, rank, served_space

logger = logging.getLogger(__name__)

DEFAULT_K = 5
DEFAULT_SHADOW_SIMILARITY = 0.95
# A pair offered only once (nearly) all of its own question is typed is reported; a short question
# that needs three quarters of its few characters is not worth an editor's time.
DEFAULT_REACH_LIMIT = 0.75


@dataclass(frozen=True)
class AuditOptions:
    k: int = DEFAULT_K
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    shadow_similarity: float = DEFAULT_SHADOW_SIMILARITY
    reach_limit: float = DEFAULT_REACH_LIMIT


@dataclass(frozen=True)
class PairReach:
    """How one pair fares when its own question is typed."""

    id: int
    question: str
    ranks: tuple[int | None, ...]  # its position in the top k at each fraction, None when absent
    reach: float | None  # the least fraction from which it stays in the top k; None: never
    shadowed_by: tuple[int, str, float] | None  # (id, question, cosine) of a near-identical question

    def is_flagged(self, options: AuditOptions) -> bool:
        return self.reach is None or self.reach > options.reach_limit or self.shadowed_by is not None

    def severity(self) -> tuple[bool, float, float]:
        """Sort key, worst first when sorted in reverse: unreachable, then late, then most shadowed."""
        shadow = self.shadowed_by[2] if self.shadowed_by else 0.0
        return (self.reach is None, self.reach or 0.0, shadow)

    def as_json(self) -> dict[str, Any]:
        shadow = self.shadowed_by
        return {
            "id": self.id,
            "question": self.question,
            "ranks": list(self.ranks),
            "reach": self.reach,
            "shadowed_by": None if shadow is None else {"id": shadow[0], "question": shadow[1], "cosine": shadow[2]},
        }


def audit_space(space: SearchSpace, encoder: Encoder, options: AuditOptions = AuditOptions()) -> list[PairReach]:
    """Every pair's reach and shadowing in a loaded search space, in the space's order."""
    prefixes = [[cut(question, fraction) for fraction in options.fractions] for question in space.questions]
    embed = _batched_embedder(space, encoder, {prefix for cuts in prefixes for prefix in cuts})
    neighbours = space.index.nearest_others(space.ids)
    ranks = _ranks(space, prefixes, embed, options.k)
    results = []
    for pk, question, pair_ranks, neighbour in zip(space.ids, space.questions, ranks, neighbours, strict=True):
        shadow = None
        if neighbour is not None and neighbour[1] >= options.shadow_similarity and neighbour[0] in space.position:
            other = neighbour[0]
            shadow = (other, space.questions[space.position[other]], round(neighbour[1], 4))
        results.append(PairReach(pk, question, pair_ranks, _reach(pair_ranks, options.fractions), shadow))
    return results


def _ranks(space: SearchSpace, prefixes: list[list[str]], embed: Embed, k: int) -> list[tuple[int | None, ...]]:
    """Each pair's position for each of its prefixes, searched one query at a time as served."""
    # One query vector per search: spare OpenMP threads only wait on each other (serving runs one).
    threads = thread_cap()
    set_threads(1)
    try:
        return [
            tuple(_rank_of(pk, rank(space, prefix, embed=embed, k=k)) for prefix in cuts)
            for pk, cuts in zip(space.ids, prefixes, strict=True)
        ]
    finally:
        set_threads(threads)


def _rank_of(pk: int, ranked: Sequence[Suggestion]) -> int | None:
    return next((position for position, s in enumerate(ranked, start=1) if s.id == pk), None)


def _reach(ranks: Sequence[int | None], fractions: Sequence[float]) -> float | None:
    reach = None
    for fraction, position in sorted(zip(fractions, ranks, strict=True), reverse=True):
        if position is None:
            break
        reach = fraction
    return reach


def _batched_embedder(space: SearchSpace, encoder: Encoder, prefixes: set[str]) -> Embed:
    """An `embed` for `rank` whose texts, those the served ranking derives from the prefixes, are
    embedded up front, each once, by `encode_queries` (in batches where the encoder allows it)."""
    texts = sorted(
        {" ".join(embedding_text(TypedQuery.parse(p), space.lexical, DEFAULT_RANKING).split()) for p in prefixes}
    )
    vectors = dict(zip(texts, encode_queries(encoder, texts), strict=True))

    def embed(text: str) -> np.ndarray:
        text = " ".join(text.split())
        vector = vectors.get(text)
        if vector is None:
            vector = vectors[text] = encode_queries(encoder, [text])[0]
        return np.asarray(vector)

    return embed


def request_audit(
    corpus: Corpus, *, encoder: str | None = None, options: AuditOptions = AuditOptions()
) -> ReachabilityAudit:
    """Queue an audit of the corpus as served (by `encoder`, default: the one that answers visitors)."""
    audit = _audit_row(corpus, encoder)
    run_audit_task.enqueue(audit.pk, list(options.fractions), options.k, options.shadow_similarity, options.reach_limit)
    audit.refresh_from_db()
    return audit


def audit_now(
    corpus: Corpus, *, encoder: str | None = None, options: AuditOptions = AuditOptions()
) -> ReachabilityAudit:
    """Run the audit in this process (the `audit_reachability` command) and store it."""
    return run_audit(_audit_row(corpus, encoder).pk, options)


def _audit_row(corpus: Corpus, encoder: str | None) -> ReachabilityAudit:
    key = encoder or served_space(corpus.slug)[0]
    audit, _ = ReachabilityAudit.objects.update_or_create(
        corpus=corpus,
        encoder=key,
        defaults={"status": AnalysisStatus.QUEUED, "error": "", "requested_at": timezone.now()},
    )
    return audit


@task()
def run_audit_task(audit_id: int, fractions: list[float], k: int, shadow_similarity: float, reach_limit: float) -> str:
    """The background task: one corpus's reachability audit. Returns its final status."""
    options = AuditOptions(k, tuple(fractions), shadow_similarity, reach_limit)
    return run_audit(audit_id, options).status


def run_audit(audit_id: int, options: AuditOptions = AuditOptions()) -> ReachabilityAudit:
    """Audit and store the flagged pairs, worst first; a failure is recorded on the row, never raised."""
    audit = ReachabilityAudit.objects.select_related("corpus").get(pk=audit_id)
    ReachabilityAudit.objects.filter(pk=audit_id).update(status=AnalysisStatus.RUNNING, error="")
    started = time.monotonic()
    try:
        served = served_space(audit.corpus.slug, audit.encoder)
        # Prefixes are embedded as visitors' are: by the corpus's query encoder where it has one.
        reaches = audit_space(served.space, served.queries, options)
    except Exception as exc:
        logger.exception("Reachability audit of corpus %s failed", audit.corpus.slug)
        ReachabilityAudit.objects.filter(pk=audit_id).update(
            status=AnalysisStatus.FAILED,
            error=f"{type(exc).__name__}: {exc}. The previous audit was kept; fix the cause and run it again.",
        )
    else:
        flagged = sorted((r for r in reaches if r.is_flagged(options)), key=PairReach.severity, reverse=True)
        ReachabilityAudit.objects.filter(pk=audit_id).update(
            status=AnalysisStatus.DONE,
            k=options.k,
            fractions=list(options.fractions),
            shadow_similarity=options.shadow_similarity,
            pair_count=len(reaches),
            findings=[r.as_json() for r in flagged],
            computed_at=timezone.now(),
            duration_seconds=round(time.monotonic() - started, 2),
        )
    audit.refresh_from_db()
    return audit
