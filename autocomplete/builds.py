"""Index files: build one, verify it, make it live, prune superseded and orphaned files, load a live one.

Every index file is named uniquely and never overwritten: a new build is written beside the live
one, read back and verified, then switched live by one row update in the caller's transaction
(readers never see a half-built index). Serving processes learn of the switch through the catalog.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from embeddings.encoders import Encoder
from embeddings.vector_index import IndexFileError, VectorIndex, set_threads, thread_cap

from .catalog import LiveBuild, announce_catalog_change
from .conf import app_settings
from .controls import corpus_synonyms
from .embedding_store import Progress
from .lexical_store import (
    LEXICAL_INFIX,
    LEXICAL_SUFFIX,
    RETIRED_LEXICAL_SUFFIXES,
    lexical_files_of,
    lexical_index_for,
    owner_of,
)
from .models import Corpus, IndexBuild

logger = logging.getLogger(__name__)

# Superseded files kept for serving processes that may still be loading them.
KEEP_SUPERSEDED_FILES = 2
ORPHAN_AGE_SECONDS = 3600


class IndexWriteError(Exception):
    """A new index file could not be written; the message says why in words, without paths."""


def _write_failure(exc: OSError) -> IndexWriteError:
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        why = "the index directory (AUTOCOMPLETE_INDEX_DIR) is not writable; make it writable"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk holding the index directory (AUTOCOMPLETE_INDEX_DIR) is full; free some space"
    else:
        words = os.strerror(exc.errno).lower() if exc.errno else str(exc) or type(exc).__name__
        why = f"the index directory (AUTOCOMPLETE_INDEX_DIR) cannot be written ({words}); check it"
    return IndexWriteError(f"The new index file could not be written: {why}, then build it again.")


def build_index(
    corpus: Corpus,
    encoder: Encoder,
    *,
    ids: Sequence[int],
    questions: Sequence[str],
    vectors: np.ndarray,
    progress: Progress | None = None,
) -> IndexBuild:
    """Build, verify and make live an index of these pairs (the corpus's current ones) and their vectors.

    Call inside `transaction.atomic()` together with the pair changes it reflects, so the pairs
    and the live index change together or not at all.
    """
    started = time.perf_counter()
    conf = app_settings()
    spec = encoder.spec
    file_name = f"{corpus.slug}--{spec.key}--{uuid.uuid4().hex[:12]}.faiss"
    threads = thread_cap()

    def build_vectors() -> VectorIndex:
        set_threads(threads)  # OpenMP's cap is per thread: the builder keeps the caller's
        return VectorIndex.build(
            vectors,
            ids,
            encoder=spec.key,
            dimension=spec.dimension,
            ann_threshold=conf.ann_threshold,
            hnsw=conf.hnsw,
        )

    try:
        remove_orphan_files()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vector-index") as builder:
            # faiss builds the graph outside the GIL while this thread prepares the lexical index
            # that serving processes will load.
            building = builder.submit(build_vectors)
            lexical_index_for(file_name, ids, questions, synonyms=corpus_synonyms(corpus.pk))
            index = building.result()
        path = conf.index_dir / file_name
        checksum = index.save(path)
        verified = VectorIndex.load(path, encoder=spec.key, dimension=spec.dimension)
        if verified.count != len(ids):
            raise IndexFileError(f"{path} holds {verified.count} vectors after saving {len(ids)}.")
    except BaseException as exc:
        # Nothing of a failed build stays behind: the live index is the one before.
        with contextlib.suppress(OSError):
            delete_index_file(file_name)
        if isinstance(exc, OSError):
            logger.error("Index %s could not be written: %s", file_name, exc)
            raise _write_failure(exc) from exc
        raise
    if progress:
        progress("indexed", len(ids), len(ids))
    build = make_live(
        corpus,
        encoder=spec.key,
        file_name=file_name,
        kind=index.kind,
        vector_count=len(ids),
        dimension=spec.dimension,
        checksum=checksum,
        build_seconds=time.perf_counter() - started,
    )
    logger.info("Index %s live: %d vectors (%s)", file_name, len(ids), index.kind)
    return build


def make_live(corpus: Corpus, *, encoder: str, **fields: object) -> IndexBuild:
    """Record a verified index file and make it the live one for (corpus, encoder)."""
    with transaction.atomic():
        IndexBuild.objects.filter(corpus=corpus, encoder=encoder, is_live=True).update(is_live=False)
        build = IndexBuild.objects.create(corpus=corpus, encoder=encoder, is_live=True, **fields)
    transaction.on_commit(lambda: _prune_superseded(corpus.pk, encoder))
    transaction.on_commit(announce_catalog_change)
    return build


def _prune_superseded(corpus_id: int, encoder: str) -> None:
    old = IndexBuild.objects.filter(corpus_id=corpus_id, encoder=encoder, is_live=False)
    for build in old.order_by("-created_at")[KEEP_SUPERSEDED_FILES:]:
        build.delete()


def delete_index_file(file_name: str) -> None:
    """Delete an index file and the lexical files stored beside it."""
    (app_settings().index_dir / file_name).unlink(missing_ok=True)
    for path in lexical_files_of(file_name):
        path.unlink(missing_ok=True)


def remove_orphan_files(*, min_age_seconds: float = ORPHAN_AGE_SECONDS) -> list[str]:
    """Delete temp and index files no build refers to (left by crashed or rolled-back builds) and
    lexical files of retired formats.

    Only files older than `min_age_seconds` go, so a build in flight elsewhere is never touched.
    """
    directory = app_settings().index_dir
    if not directory.is_dir():
        return []
    referenced = set(IndexBuild.objects.values_list("file_name", flat=True))
    cutoff = time.time() - min_age_seconds
    removed = []
    for path in directory.iterdir():
        if not path.is_file() or path.stat().st_mtime > cutoff:
            continue
        orphan = owner_of(path.name) not in referenced and (
            path.name.startswith(".tmp-") or path.suffix in (".faiss", LEXICAL_SUFFIX)
        )
        if orphan or (LEXICAL_INFIX in path.name and path.suffix in RETIRED_LEXICAL_SUFFIXES):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def load_live_index(build: LiveBuild) -> VectorIndex:
    """Read a live build's file, checking it is the one the database recorded."""
    conf = app_settings()
    index = VectorIndex.load(
        conf.index_dir / build.file_name,
        encoder=build.encoder,
        dimension=build.dimension,
        ef_search=conf.hnsw.ef_search,
    )
    if index.count != build.vector_count:
        raise IndexFileError(
            f"{build.file_name} holds {index.count} vectors; the database recorded {build.vector_count}.",
            reason="the index file does not match what the database recorded",
        )
    return index


@receiver(post_delete, sender=IndexBuild)
def _delete_file_with_build(*, instance: IndexBuild, **kwargs: object) -> None:
    # After commit: a rolled-back delete must not lose the file of a build that still exists.
    file_name = instance.file_name
    transaction.on_commit(lambda: delete_index_file(file_name))
