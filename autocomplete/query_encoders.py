"""Query encoders of live corpora: train and register one, tell whether it is current, serve with it.

A query encoder (embeddings/query_encoder.py) is an optional part of a corpus's vector space: it
answers that corpus's queries only while the corpus encoder produces the vectors it was trained
against. Absent, serving is exactly as without it; stale, the corpus encoder answers alone and the
admin says why.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from embeddings.encoders import Encoder, EncoderError, local_model_dir
from embeddings.query_encoder import QueryEncoderError, TrainingConfig, load_query_encoder, train_query_encoder

from .catalog import CorpusEntry, LiveQueryEncoder, announce_catalog_change
from .conf import app_settings
from .embedding_store import embed_texts
from .encoder_registry import encoder_registry
from .models import Corpus, QAPair, QueryEncoder

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # stage, done, total: the ingest jobs' callback


def questions_sha256(questions: Sequence[str]) -> str:
    """What a query encoder was trained on, to tell a changed corpus."""
    return hashlib.sha256("\n".join(questions).encode("utf-8")).hexdigest()


def train_for_corpus(
    corpus: Corpus,
    *,
    encoder_key: str,
    steps: int | None = None,
    seed: int = 0,
    extra_questions: Sequence[str] = (),
    extra_files: Sequence[str] = (),
    progress: Progress | None = None,
) -> QueryEncoder:
    """Train a query encoder for the corpus's `encoder_key` index on its questions, and make it live.

    The targets are the corpus encoder's stored vectors, the ones its index holds; extra questions
    (other files) are embedded by the same encoder and only add training examples.
    """
    conf = app_settings()
    encoder = encoder_registry().get(encoder_key)
    own = list(QAPair.objects.filter(corpus=corpus).order_by("id").values_list("question", flat=True))
    if len(own) + len(extra_questions) < 2:
        raise QueryEncoderError(f"Corpus '{corpus.slug}' has fewer than 2 questions: ingest some first.")
    stored = embed_texts(encoder, own, progress=progress).vectors
    extra = encoder.encode(list(extra_questions), batch_size=conf.embed_batch_size)
    questions = own + list(extra_questions)
    targets = np.vstack([stored, extra]) if len(extra) else stored
    directory = f"{corpus.slug}--{encoder_key}--{uuid.uuid4().hex[:12]}"
    config = TrainingConfig(steps=steps or conf.query_encoder_steps, seed=seed)
    result = train_query_encoder(
        local_model_dir(encoder.spec, allow_download=conf.allow_download),
        questions,
        targets,
        conf.query_encoder_dir / directory,
        config=config,
        progress=(lambda step, total, _loss: progress("training", step, total)) if progress else None,
        extra={"corpus": corpus.slug, "encoder": encoder_key, "vector_space": encoder.vector_space},
        threads=conf.encoder_threads,
    )
    with transaction.atomic():
        QueryEncoder.objects.filter(corpus=corpus, encoder=encoder_key, is_live=True).update(is_live=False)
        record = QueryEncoder.objects.create(
            corpus=corpus,
            encoder=encoder_key,
            vector_space=encoder.vector_space,
            content_sha256=questions_sha256(questions),
            directory=directory,
            questions=result.questions,
            extra_files=list(extra_files),
            steps=result.steps,
            seed=seed,
            loss_before=result.loss_before,
            loss_after=result.loss_after,
            identity_cosine=result.identity_cosine,
            train_seconds=result.seconds,
            is_live=True,
        )
        transaction.on_commit(announce_catalog_change)
    remove_superseded(corpus, encoder_key)
    return record


def remove_superseded(corpus: Corpus, encoder_key: str) -> None:
    """Delete the rows (and so the folders) of query encoders no longer live for this corpus and encoder."""
    for old in QueryEncoder.objects.filter(corpus=corpus, encoder=encoder_key, is_live=False):
        old.delete()


@receiver(post_delete, sender=QueryEncoder)
def _delete_folder_with_record(*, instance: QueryEncoder, **kwargs: object) -> None:
    # After commit: a rolled-back delete (of its corpus, say) must not lose a folder still in use.
    folder = app_settings().query_encoder_dir / instance.directory
    transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))


def stale_reason(record: QueryEncoder) -> str | None:
    """Why a query encoder is not used (its corpus encoder's vectors changed, or it cannot load), or None."""
    try:
        current = encoder_registry().get(record.encoder).vector_space
    except EncoderError as exc:
        return f"its encoder cannot load here ({exc})"
    if current != record.vector_space:
        return (
            f"the {record.encoder} encoder's vectors changed since it was trained ({record.vector_space} -> "
            f"{current}); the corpus encoder answers alone until it is trained again"
        )
    return None


def changed_enough(corpus: Corpus, changed: int) -> bool:
    """Whether `changed` questions (added, updated or removed) call for training its query encoders again."""
    share = app_settings().query_encoder_retrain_share
    if share <= 0 or not changed:
        return False
    total = max(1, QAPair.objects.filter(corpus=corpus).count())
    return changed / total >= share


# --- serving ---------------------------------------------------------------------------------

_loaded: dict[str, Encoder | None] = {}  # directory -> its encoder, or None when it failed to load
_loaded_lock = threading.Lock()


def query_encoder_for(entry: CorpusEntry, key: str, corpus_encoder: Encoder) -> Encoder:
    """The encoder that embeds this corpus's queries: its query encoder while current, else the corpus encoder."""
    live: LiveQueryEncoder | None = entry.query_encoders.get(key)
    if live is None or live.vector_space != corpus_encoder.vector_space:
        return corpus_encoder
    model = _loaded.get(live.directory)
    if model is None and live.directory not in _loaded:
        with _loaded_lock:
            if live.directory not in _loaded:
                _loaded[live.directory] = _load(live, corpus_encoder)
            model = _loaded[live.directory]
    return model or corpus_encoder


def _load(live: LiveQueryEncoder, corpus_encoder: Encoder) -> Encoder | None:
    conf = app_settings()
    try:
        return load_query_encoder(
            corpus_encoder.spec,
            conf.query_encoder_dir / live.directory,
            backend=corpus_encoder.spec.backend,
            threads=conf.encoder_threads or 1,
        )
    except (OSError, QueryEncoderError, EncoderError, RuntimeError) as exc:
        # Serving goes on as without it; the log says which folder to repair.
        logger.error("Query encoder %s cannot be loaded; the corpus encoder answers alone: %s", live.directory, exc)
        return None


def forget_loaded_query_encoders() -> None:
    """Drop this process's loaded query encoders (tests, and after their folders change)."""
    with _loaded_lock:
        _loaded.clear()


def query_encoder_path(record: QueryEncoder) -> Path:
    return app_settings().query_encoder_dir / record.directory
