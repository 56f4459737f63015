"""Question vectors stored by encoder and text hash, so an unchanged question is never embedded twice."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from django.db.models import Q

from embeddings.encoders import Encoder

from .conf import app_settings
from .models import StoredEmbedding, text_sha256

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # stage, done, total
# Texts per look-up of stored vectors: well under SQLite's limit of bound parameters.
_LOOKUP_CHUNK = 500


def embedding_key(encoder: Encoder) -> str:
    """Stored vectors are reused only from the same encoder producing the same vectors."""
    return f"{encoder.spec.key}:{encoder.vector_space}"


@dataclass(frozen=True)
class Embedded:
    """One encoder's vectors for the texts asked for, and every vector it found or computed."""

    vectors: np.ndarray  # one row per text asked for, in order
    computed: int  # distinct texts the encoder ran on; every other row reused a stored vector
    by_hash: Mapping[str, bytes]  # text hash -> vector bytes, for a later call to reuse


def embed_texts(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    progress: Progress | None = None,
    reuse: Embedded | None = None,
) -> Embedded:
    """Vectors for `texts`: from `reuse`, else stored ones, else computed now and stored.

    `reuse` is an earlier result of the same encoder: a caller embedding the same texts twice (an
    ingest, then the index build in its transaction) reads none of them back from the database.
    """
    key = embedding_key(encoder)
    hashes = [text_sha256(text) for text in texts]
    known = dict(reuse.by_hash) if reuse is not None else {}
    unique_hashes = [h for h in dict.fromkeys(hashes) if h not in known]
    for start in range(0, len(unique_hashes), _LOOKUP_CHUNK):
        chunk = unique_hashes[start : start + _LOOKUP_CHUNK]
        rows = StoredEmbedding.objects.filter(encoder=key, text_sha256__in=chunk)
        # bytes() because PostgreSQL's driver returns a memoryview.
        known.update((h, bytes(vector)) for h, vector in rows.values_list("text_sha256", "vector"))
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in known}
    computed = _compute(encoder, key, missing, known, progress=progress, total=len(texts))
    matrix = np.empty((len(texts), encoder.spec.dimension), dtype=np.float32)
    for row, h in enumerate(hashes):
        matrix[row] = np.frombuffer(known[h], dtype=np.float32)
    return Embedded(matrix, computed=computed, by_hash=known)


def _compute(
    encoder: Encoder,
    key: str,
    missing: dict[str, str],
    known: dict[str, bytes],
    *,
    progress: Progress | None,
    total: int,
) -> int:
    """Encode and store the `missing` texts (hash -> text), adding their vectors to `known`."""
    batch_size = app_settings().embed_batch_size
    chunk_size = batch_size * 8
    # Shortest first across all the texts: the encoder pads a batch to its longest text and only
    # sorts within one call. Rows are matched back by hash.
    items = sorted(missing.items(), key=lambda item: len(item[1]))
    if not items:
        return 0
    chunks = [items[start : start + chunk_size] for start in range(0, len(items), chunk_size)]
    done = total - len(items)

    def encode(chunk_items: list[tuple[str, str]]) -> np.ndarray:
        return encoder.encode([text for _, text in chunk_items], batch_size=batch_size)

    # The next chunk is encoded (outside the GIL) while this one's vectors are stored, so the
    # cores do not idle during the writes. Only this thread touches the database.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-ahead") as ahead:
        pending = ahead.submit(encode, chunks[0])
        for position, chunk_items in enumerate(chunks):
            vectors = pending.result()
            if position + 1 < len(chunks):
                pending = ahead.submit(encode, chunks[position + 1])
            new_rows = [
                StoredEmbedding(encoder=key, text_sha256=h, vector=vector.tobytes())
                for (h, _), vector in zip(chunk_items, vectors, strict=True)
            ]
            StoredEmbedding.objects.bulk_create(new_rows, ignore_conflicts=True, batch_size=_LOOKUP_CHUNK)
            known.update((row.text_sha256, bytes(row.vector)) for row in new_rows)
            done += len(chunk_items)
            if progress:
                progress("embedded", done, total)
    return len(items)


def prune_stale_embeddings(encoder: Encoder) -> int:
    """Delete stored vectors of this encoder and backend from earlier exports; return how many.

    A new ONNX export (other format or weights) gets a new vector space, and the old one's vectors
    are never read again: the export directory only holds the newest. Vectors of other backends
    (torch beside onnx-int8) are kept, since a deployment may switch back.
    """
    backend = f"{encoder.spec.key}:{encoder.backend_label}"
    current = embedding_key(encoder)
    # A range rather than startswith: SQLite's LIKE cannot use the index ("/" < "0" in ASCII).
    stale = StoredEmbedding.objects.filter(
        Q(encoder=backend) | Q(encoder__gte=f"{backend}/", encoder__lt=f"{backend}0")
    ).exclude(encoder=current)
    deleted, _ = stale.delete()
    if deleted:
        logger.info("Deleted %d stored vectors of earlier %s exports", deleted, backend)
    return deleted
