"""Index files: build one, verify it, make it live, prune superseded and orphaned files, load a live one.

Every index file is named uniquely and never overwritten: a new build is written beside the live
one, read back and verified, then switched live by one row update in the caller's transaction
(readers never see a half-built index). Serving processes learn of the switch through the catalog.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils import timezone

from embeddings.encoders import Encoder
from embeddings.vector_index import IndexFileError, VectorIndex, set_threads, thread_cap

from .catalog import LiveBuild, announce_catalog_change
from .conf import app_settings
from .controls import corpus_synonyms
from .embedding_store import Progress
from .index_storage import (
    TEMP_PREFIX,
    IndexFetchError,
    delete,
    fetch,
    in_place_path,
    is_local,
    prune_cache,
    store,
    stored_age_seconds,
    stored_names,
)
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

# Superseded builds kept, however old, beside those within SUPERSEDED_GRACE_SECONDS of their switch.
KEEP_SUPERSEDED_FILES = 2
ORPHAN_AGE_SECONDS = 3600


class IndexWriteError(Exception):
    """A new index file could not be written; the message says why in words, without paths."""


def _write_failure(exc: OSError) -> IndexWriteError:
    if not is_local():
        why = f"the index storage (AUTOCOMPLETE_INDEX_STORAGE) refused it ({exc}); check that it answers"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
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
        local = in_place_path(file_name)
        if local is not None:
            checksum = index.save(local)
        else:
            data = index.to_bytes()
            checksum = hashlib.sha256(data).hexdigest()
            store(file_name, data)
        verified = VectorIndex.load(fetch(file_name, sha256=checksum), encoder=spec.key, dimension=spec.dimension)
        if verified.count != len(ids):
            raise IndexFileError(f"{file_name} holds {verified.count} vectors after saving {len(ids)}.")
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


def prune_superseded() -> None:
    """Delete the superseded builds (and files) that no server can still be loading, of every corpus."""
    pairs = IndexBuild.objects.filter(is_live=False).order_by().values_list("corpus_id", "encoder").distinct()
    for corpus_id, encoder in pairs:
        _prune_superseded(corpus_id, encoder)


def _prune_superseded(corpus_id: int, encoder: str) -> None:
    # A server loads the build its catalog names live, and its catalog is at most the TTL old: once
    # the grace has passed since a build was superseded (its successor made), no server reads its file.
    cutoff = timezone.now() - timedelta(seconds=app_settings().superseded_grace_seconds)
    builds = list(IndexBuild.objects.filter(corpus_id=corpus_id, encoder=encoder).order_by("-created_at", "-pk"))
    superseded = 0
    for successor, build in zip(builds, builds[1:], strict=False):
        if build.is_live:
            continue
        superseded += 1
        if superseded > KEEP_SUPERSEDED_FILES and successor.created_at < cutoff:
            build.delete()


def delete_index_file(file_name: str) -> None:
    """Delete an index file and the lexical files stored beside it, in the storage and this process's cache."""
    delete(file_name)
    for name in lexical_files_of(file_name):
        delete(name)


def remove_orphan_files(*, min_age_seconds: float = ORPHAN_AGE_SECONDS) -> list[str]:
    """Delete temp and index files no build refers to (left by crashed or rolled-back builds) and
    lexical files of retired formats; prune superseded builds past their grace and this process's
    copies of files whose build is gone.

    Only files older than `min_age_seconds` go, so a build in flight elsewhere is never touched.
    """
    prune_superseded()
    referenced = set(IndexBuild.objects.values_list("file_name", flat=True))
    removed = []
    for name in stored_names():
        suffix = os.path.splitext(name)[1]
        orphan = owner_of(name) not in referenced and (
            name.startswith(TEMP_PREFIX) or suffix in (".faiss", LEXICAL_SUFFIX)
        )
        retired = LEXICAL_INFIX in name and suffix in RETIRED_LEXICAL_SUFFIXES
        if (orphan or retired) and stored_age_seconds(name) >= min_age_seconds:
            delete(name)
            removed.append(name)
    remove_cached_copies(referenced)
    return removed


def remove_cached_copies(referenced: set[str] | None = None) -> list[str]:
    """Delete this process's downloaded copies of files whose build is gone (a storage that is not local)."""
    if referenced is None:
        referenced = set(IndexBuild.objects.values_list("file_name", flat=True))
    return prune_cache(lambda name: owner_of(name) in referenced, temp_age_seconds=ORPHAN_AGE_SECONDS)


def load_live_index(build: LiveBuild) -> VectorIndex:
    """Read a live build's file, checking it is the one the database recorded.

    From a storage that is not local, the file is downloaded into this process's cache first.
    """
    conf = app_settings()
    try:
        path = fetch(build.file_name, sha256=build.checksum or None)
    except FileNotFoundError as exc:
        raise IndexFileError(
            f"Index file {build.file_name} is not in the index storage.", reason="the index file is missing"
        ) from exc
    except IndexFetchError as exc:
        raise IndexFileError(str(exc), reason=exc.reason) from exc
    index = VectorIndex.load(path, encoder=build.encoder, dimension=build.dimension, ef_search=conf.hnsw.ef_search)
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
