"""Load parsed QA rows into a corpus and rebuild its index: plan, embed, then apply atomically.

The plan compares the file with the corpus without writing. Embeddings for new question texts
are computed and stored before the write transaction (they are keyed by text, so they are
harmless if the ingest then fails). The pair changes and the new live index are committed in one
transaction: a failure or a kill at any point leaves the previous pairs and index serving.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from django.db import transaction
from django.utils import timezone

from embeddings.encoders import Encoder

from .builds import build_index
from .embedding_store import Embedded, Progress, embed_texts, prune_stale_embeddings
from .encoder_registry import encoder_for_indexing
from .models import Corpus, IndexBuild, QAPair
from .parsing import ParsedFile, Rejection, Row

logger = logging.getLogger(__name__)

Mode = Literal["merge", "replace"]
MODES: tuple[Mode, ...] = ("merge", "replace")
_COMPARED = ("question", "answer", "url", "tags")


@dataclass
class Plan:
    """What applying a parsed file to a corpus would change."""

    to_add: list[Row] = field(default_factory=list)
    to_update: list[tuple[int, Row]] = field(default_factory=list)  # (pair id, new values)
    unchanged: int = 0
    to_remove: list[int] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    # A replace removes nothing while any row could not be read: the file may hold those pairs.
    unreadable_rows: int = 0

    @property
    def changes_pairs(self) -> bool:
        return bool(self.to_add or self.to_update or self.to_remove)


def withheld_removal_note(unreadable_rows: int, *, done: bool = True) -> str:
    """Why a replace removed (or, before it runs, will remove) no pair; empty when it does not apply."""
    if not unreadable_rows:
        return ""
    rows = "1 row" if unreadable_rows == 1 else f"{unreadable_rows:,} rows"
    outcome = "no pair was removed" if done else "no pair will be removed"
    return f"{rows} could not be read, so {outcome}; fix them and upload again."


@dataclass
class IngestReport:
    corpus: str
    encoders: list[str]
    format: str
    added: int
    updated: int
    unchanged: int
    removed: int
    rejected: list[Rejection]
    index_builds: list[IndexBuild]  # empty when nothing changed and the live indexes stand
    # Question texts run through an encoder (per encoder, summed) and texts whose stored vector
    # was reused instead: a re-upload with 10 changed rows embeds about 10.
    embedded: int = 0
    reused: int = 0
    unreadable_rows: int = 0  # in replace mode: why nothing was removed

    @property
    def removal_note(self) -> str:
        return withheld_removal_note(self.unreadable_rows)

    @property
    def encoder(self) -> str:
        return self.encoders[0]

    @property
    def index_build(self) -> IndexBuild | None:
        return self.index_builds[0] if self.index_builds else None

    def summary(self) -> str:
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.removed} removed, {len(self.rejected)} rejected; "
            f"vectors: {self.embedded} embedded, {self.reused} reused"
        )


def ingest_mode(value: str) -> Mode:
    """`value` as a mode (merge or replace), or ValueError."""
    for mode in MODES:
        if value == mode:
            return mode
    raise ValueError(f"Unknown ingest mode {value!r}; one of {', '.join(MODES)}.")


def plan_ingest(corpus: Corpus, parsed: ParsedFile, *, mode: Mode = "merge") -> Plan:
    """Compare the file with the corpus: rows match by id when given, else by question."""
    # A corpus not saved yet (created by this ingest) has no pairs to compare with.
    pairs = QAPair.objects.filter(corpus=corpus) if corpus.pk else QAPair.objects.none()
    existing = list(pairs.values("id", "external_id", "normalised_question", *_COMPARED))
    by_external = {pair["external_id"]: pair for pair in existing if pair["external_id"]}
    by_question = {pair["normalised_question"]: pair for pair in existing}
    plan = Plan(rejected=list(parsed.rejected))
    matched: set[int] = set()
    for row in parsed.rows:
        pair = by_external.get(row.external_id) if row.external_id else None
        pair = pair or by_question.get(row.normalised_question)
        if pair is None:
            plan.to_add.append(row)
            continue
        clash = by_question.get(row.normalised_question)
        if clash is not None and clash["id"] != pair["id"]:
            plan.rejected.append(Rejection(row.line, f"question already belongs to pair {clash['id']}"))
            continue
        matched.add(pair["id"])
        if any(getattr(row, name) != pair[name] for name in _COMPARED) or (
            row.external_id and row.external_id != pair["external_id"]
        ):
            plan.to_update.append((pair["id"], row))
        else:
            plan.unchanged += 1
    if mode == "replace" and parsed.unreadable_rows:
        plan.unreadable_rows = parsed.unreadable_rows
    elif mode == "replace":
        plan.to_remove = [pair["id"] for pair in existing if pair["id"] not in matched]
    plan.rejected.sort(key=lambda rejection: rejection.line)
    return plan


def ingest_parsed(
    corpus: Corpus,
    parsed: ParsedFile,
    *,
    encoder_key: str | None = None,
    encoder_keys: Sequence[str] = (),
    mode: Mode = "merge",
    progress: Progress | None = None,
) -> IngestReport:
    """Apply a parsed file to the corpus and make an index of the result live for each encoder.

    `corpus` may be unsaved: it is created in the same transaction as its pairs and indexes.
    """
    keys: list[str | None] = [*encoder_keys] or [encoder_key]
    encoders = [_encoder(corpus, key) for key in keys]
    plan = plan_ingest(corpus, parsed, mode=mode)
    # Embed before the write transaction so the database is locked only briefly.
    texts = [row.question for row in plan.to_add] + [row.question for _, row in plan.to_update]
    embedded = [
        embed_texts(encoder, texts, progress=_scaled(progress, position, len(encoders), len(texts)))
        for position, encoder in enumerate(encoders)
    ]
    builds: list[IndexBuild] = []
    if progress:
        progress("indexing", 0, 0)
    with transaction.atomic():
        corpus = _lock(corpus)
        # Another job may have changed the corpus while this one embedded: plan again under the
        # lock. Questions that plan adds beyond the first are embedded by the build.
        plan = plan_ingest(corpus, parsed, mode=mode)
        _apply(corpus, plan)
        _apply_featured(corpus, parsed)
        for position, (encoder, vectors) in enumerate(zip(encoders, embedded, strict=True)):
            live = IndexBuild.objects.filter(corpus=corpus, encoder=encoder.spec.key, is_live=True)
            if plan.changes_pairs or not live.exists():
                count = QAPair.objects.filter(corpus=corpus).count()
                scaled = _scaled(progress, position, len(encoders), count)
                builds.append(_build(corpus, encoder, reuse=vectors, progress=scaled))
    report = IngestReport(
        corpus=corpus.slug,
        encoders=[encoder.spec.key for encoder in encoders],
        format=parsed.format,
        added=len(plan.to_add),
        updated=len(plan.to_update),
        unchanged=plan.unchanged,
        removed=len(plan.to_remove),
        rejected=plan.rejected,
        index_builds=builds,
        embedded=sum(result.computed for result in embedded),
        reused=len(texts) * len(encoders) - sum(result.computed for result in embedded),
        unreadable_rows=plan.unreadable_rows,
    )
    logger.info("Ingest into %s: %s", corpus.slug, report.summary())
    return report


def _scaled(progress: Progress | None, position: int, parts: int, size: int) -> Progress | None:
    """Report one encoder's share of the work as progress over all encoders."""
    if progress is None:
        return None
    report = progress

    def scaled(stage: str, done: int, total: int) -> None:
        report(stage, position * size + done, parts * size)

    return scaled


def reindex(corpus: Corpus, *, encoder_key: str | None = None, progress: Progress | None = None) -> IndexBuild:
    """Rebuild the corpus's index for one encoder from its current pairs."""
    encoder = _encoder(corpus, encoder_key)
    questions = list(QAPair.objects.filter(corpus=corpus).values_list("question", flat=True))
    # Embedded outside the transaction, as in ingest_parsed; the build reuses these vectors.
    embedded = embed_texts(encoder, questions, progress=progress)
    with transaction.atomic():
        return _build(corpus, encoder, reuse=embedded, progress=progress)


def _build(corpus: Corpus, encoder: Encoder, *, reuse: Embedded, progress: Progress | None) -> IndexBuild:
    """Index the corpus's pairs as they are now, embedding only questions `reuse` lacks."""
    pairs = list(QAPair.objects.filter(corpus=corpus).order_by("id").values_list("id", "question"))
    ids = [pk for pk, _ in pairs]
    questions = [question for _, question in pairs]
    vectors = embed_texts(encoder, questions, progress=progress, reuse=reuse).vectors
    prune_stale_embeddings(encoder)
    return build_index(corpus, encoder, ids=ids, questions=questions, vectors=vectors, progress=progress)


def _lock(corpus: Corpus) -> Corpus:
    """Hold the corpus against other writers until the transaction ends; create it if new.

    On SQLite, BEGIN IMMEDIATE (settings) already serialises writers; elsewhere the row lock does.
    A corpus created by another job since this one was planned is used, not created twice.
    """
    if not corpus.pk:
        existing = Corpus.objects.select_for_update().filter(slug=corpus.slug).first()
        if existing is None:
            corpus.save()
            return corpus
        return existing
    return Corpus.objects.select_for_update().get(pk=corpus.pk)


def _encoder(corpus: Corpus, encoder_key: str | None) -> Encoder:
    # An encoder asked for by name must load; the corpus default may fall back, openly.
    if encoder_key:
        return encoder_for_indexing(encoder_key, allow_fallback=False)
    return encoder_for_indexing(corpus.default_encoder, allow_fallback=True)


def _apply_featured(corpus: Corpus, parsed: ParsedFile) -> None:
    """Set `is_featured` from a file with a featured column; no index changes, so it is not in the plan."""
    for featured in (True, False):
        questions = [row.normalised_question for row in parsed.rows if row.featured is featured]
        for start in range(0, len(questions), 500):
            batch = questions[start : start + 500]
            QAPair.objects.filter(corpus=corpus, normalised_question__in=batch).update(is_featured=featured)


def _apply(corpus: Corpus, plan: Plan) -> None:
    if plan.to_remove:
        QAPair.objects.filter(corpus=corpus, id__in=plan.to_remove).delete()
    updates = []
    now = timezone.now()  # bulk_update skips auto_now
    for pk, row in plan.to_update:
        pair = QAPair(
            pk=pk,
            corpus=corpus,
            question=row.question,
            answer=row.answer,
            url=row.url,
            tags=row.tags,
            normalised_question=row.normalised_question,
            updated_at=now,
        )
        pair.external_id = row.external_id
        updates.append(pair)
    fields = ["question", "normalised_question", "answer", "url", "tags", "updated_at", "external_id"]
    if updates:
        # Rows without an id keep theirs: only overwrite external_id where the file gave one.
        with_id = [pair for pair in updates if pair.external_id]
        without_id = [pair for pair in updates if not pair.external_id]
        QAPair.objects.bulk_update(with_id, fields, batch_size=500)
        QAPair.objects.bulk_update(without_id, fields[:-1], batch_size=500)
    QAPair.objects.bulk_create(
        [
            QAPair(
                corpus=corpus,
                external_id=row.external_id,
                question=row.question,
                normalised_question=row.normalised_question,
                answer=row.answer,
                url=row.url,
                tags=row.tags,
            )
            for row in plan.to_add
        ],
        batch_size=500,
    )
