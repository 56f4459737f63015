"""Where index files live, how a build is made live, and which builds are live right now.

Every index file is named uniquely and never overwritten: a new build is written beside the live
one, read back and verified, then switched live by one row update in the caller's transaction.
Serving processes learn of the switch through `catalog()`, re-read from the database every
AUTOCOMPLETE_CATALOG_TTL_SECONDS, so several servers sharing the database agree within seconds.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import hmac
import logging
import pickle  # noqa: S403 - loaded only when its HMAC under SECRET_KEY verifies (see lexical_index_for)
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_delete
from django.dispatch import receiver

from embeddings import lexical as lexical_module
from embeddings.encoders import Encoder
from embeddings.index import HNSWOptions, IndexFileError, VectorIndex, set_threads, thread_cap, write_atomically
from embeddings.lexical import LexicalIndex

from .models import Corpus, IndexBuild, QAPair, StoredEmbedding, text_sha256

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # stage, done, total
KEEP_SUPERSEDED_FILES = 2  # old files kept for processes still loading them
ORPHAN_AGE_SECONDS = 3600


def index_dir() -> Path:
    return Path(settings.AUTOCOMPLETE_INDEX_DIR)


def hnsw_options() -> HNSWOptions:
    options = settings.AUTOCOMPLETE_HNSW
    return HNSWOptions(m=options["M"], ef_construction=options["EF_CONSTRUCTION"], ef_search=options["EF_SEARCH"])


# --- embeddings ------------------------------------------------------------------------------


def embedding_key(encoder: Encoder) -> str:
    """Stored vectors are reused only from the same encoder producing the same vectors."""
    return f"{encoder.spec.key}:{encoder.vector_space}"


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray  # one row per text, in order
    computed: int  # distinct texts the encoder ran on; every other row reused a stored vector


def embed_texts(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    progress: Progress | None = None,
    known: dict[str, bytes] | None = None,
) -> Embedded:
    """Vectors for `texts`, reusing stored ones (by encoder + text hash) and storing new ones.

    `known` (text hash -> vector bytes of this encoder) is consulted before the database and
    filled with every vector found or computed, so a caller embedding the same texts twice (an
    ingest, then the index build in its transaction) reads none of them back.
    """
    key = embedding_key(encoder)
    hashes = [text_sha256(text) for text in texts]
    known = {} if known is None else known
    unique_hashes = [h for h in dict.fromkeys(hashes) if h not in known]
    for start in range(0, len(unique_hashes), 500):
        chunk = unique_hashes[start : start + 500]
        rows = StoredEmbedding.objects.filter(encoder=key, text_sha256__in=chunk)
        known.update(rows.values_list("text_sha256", "vector"))
    missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in known}
    batch = settings.AUTOCOMPLETE_EMBED_BATCH_SIZE * 8
    # Shortest first: the encoder pads each batch to its longest text, and it only sorts within
    # one call (`batch` texts), so sorting all of them first wastes less on padding (measured
    # about 10 % more texts/s on 10k bench questions). Rows are matched back by hash below.
    items = sorted(missing.items(), key=lambda item: len(item[1]))
    chunks = [items[start : start + batch] for start in range(0, len(items), batch)]
    done = len(texts) - len(items)

    def encode(chunk_items: list[tuple[str, str]]) -> np.ndarray:
        return encoder.encode([text for _, text in chunk_items], batch_size=settings.AUTOCOMPLETE_EMBED_BATCH_SIZE)

    # The next chunk is encoded while this one's vectors are stored: the encoders run outside
    # the GIL, and storing alone would leave the cores idle (about 5 s of 67k questions' ingest).
    # Only this thread touches the database.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed-ahead") as ahead:
        pending = ahead.submit(encode, chunks[0]) if chunks else None
        for position, chunk_items in enumerate(chunks):
            vectors = pending.result()  # type: ignore[union-attr]
            if position + 1 < len(chunks):
                pending = ahead.submit(encode, chunks[position + 1])
            new_rows = [
                StoredEmbedding(encoder=key, text_sha256=h, vector=vector.tobytes())
                for (h, _), vector in zip(chunk_items, vectors, strict=True)
            ]
            StoredEmbedding.objects.bulk_create(new_rows, ignore_conflicts=True, batch_size=500)
            known.update((row.text_sha256, bytes(row.vector)) for row in new_rows)
            done += len(chunk_items)
            if progress:
                progress("embedded", done, len(texts))
    dimension = encoder.spec.dimension
    matrix = np.empty((len(texts), dimension), dtype=np.float32)
    for row, h in enumerate(hashes):
        matrix[row] = np.frombuffer(known[h], dtype=np.float32)
    return Embedded(matrix, computed=len(items))


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


# --- builds ----------------------------------------------------------------------------------


def build_index(
    corpus: Corpus,
    encoder: Encoder,
    *,
    progress: Progress | None = None,
    known: dict[str, bytes] | None = None,
) -> IndexBuild:
    """Build, verify and make live an index of the corpus's current pairs.

    Call inside `transaction.atomic()` together with the pair changes it reflects, so the pairs
    and the live index change together or not at all. `known` is passed on to `embed_texts`.
    """
    started = time.perf_counter()
    remove_orphan_files()
    pairs = list(QAPair.objects.filter(corpus=corpus).order_by("id").values_list("id", "question"))
    ids = [pk for pk, _ in pairs]
    questions = [question for _, question in pairs]
    vectors = embed_texts(encoder, questions, progress=progress, known=known).vectors
    prune_stale_embeddings(encoder)
    spec = encoder.spec
    file_name = f"{corpus.slug}--{spec.key}--{uuid.uuid4().hex[:12]}.faiss"
    threads = thread_cap()

    def build_vectors() -> VectorIndex:
        set_threads(threads)  # the cap is per thread: the builder keeps this thread's
        return VectorIndex.build(
            vectors,
            ids,
            encoder=spec.key,
            dimension=spec.dimension,
            ann_threshold=settings.AUTOCOMPLETE_ANN_THRESHOLD,
            hnsw=hnsw_options(),
        )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vector-index") as builder:
        # faiss builds the graph outside the GIL while this thread prepares the lexical index,
        # so that serving processes load it in ~0.2 s instead of building it (~4 s at 70k). A
        # failed build leaves that file an orphan, removed with the others.
        building = builder.submit(build_vectors)
        lexical_index_for(file_name, ids, questions)
        index = building.result()
    path = index_dir() / file_name
    checksum = index.save(path)
    verified = VectorIndex.load(path, encoder=spec.key, dimension=spec.dimension)
    if verified.count != len(ids):
        path.unlink(missing_ok=True)
        raise IndexFileError(f"{path} holds {verified.count} vectors after saving {len(ids)}.")
    if progress:
        progress("indexed", len(ids), len(ids))
    build = activate_build(
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


def activate_build(corpus: Corpus, *, encoder: str, **fields: object) -> IndexBuild:
    """Record a verified index file and make it the live one for (corpus, encoder)."""
    with transaction.atomic():
        IndexBuild.objects.filter(corpus=corpus, encoder=encoder, is_active=True).update(is_active=False)
        build = IndexBuild.objects.create(corpus=corpus, encoder=encoder, is_active=True, **fields)
    transaction.on_commit(lambda: _prune_superseded(corpus.pk, encoder))
    transaction.on_commit(invalidate_catalog)
    return build


def _prune_superseded(corpus_id: int, encoder: str) -> None:
    old = IndexBuild.objects.filter(corpus_id=corpus_id, encoder=encoder, is_active=False)
    for build in old.order_by("-created_at")[KEEP_SUPERSEDED_FILES:]:
        build.delete()


def delete_index_file(file_name: str) -> None:
    (index_dir() / file_name).unlink(missing_ok=True)
    for path in index_dir().glob(f"{file_name}{LEXICAL_INFIX}*"):
        path.unlink(missing_ok=True)


def remove_orphan_files(*, min_age_seconds: float = ORPHAN_AGE_SECONDS) -> list[str]:
    """Delete temp files and index files no build refers to (left by crashed or rolled-back builds).

    Only files older than `min_age_seconds` go, so a build in flight elsewhere is never touched.
    """
    directory = index_dir()
    if not directory.is_dir():
        return []
    referenced = set(IndexBuild.objects.values_list("file_name", flat=True))
    cutoff = time.time() - min_age_seconds
    removed = []
    for path in directory.iterdir():
        owner = path.name.split(LEXICAL_INFIX)[0]  # a lexical file belongs to its index file
        if owner in referenced or not path.is_file() or path.stat().st_mtime > cutoff:
            continue
        if path.name.startswith(".tmp-") or path.suffix in (".faiss", ".pickle"):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def load_build_index(build: LiveBuild) -> VectorIndex:
    """Read a live build's file, checking it is the one the database recorded."""
    index = VectorIndex.load(
        index_dir() / build.file_name,
        encoder=build.encoder,
        dimension=build.dimension,
        ef_search=hnsw_options().ef_search,
    )
    if index.count != build.vector_count:
        raise IndexFileError(
            f"{build.file_name} holds {index.count} vectors; the database recorded {build.vector_count}."
        )
    return index


# --- lexical indexes, kept beside their index file -----------------------------------------

LEXICAL_INFIX = ".lexical-"
_MAC_SIZE = hashlib.sha256().digest_size


def _lexical_mac(payload: bytes) -> bytes:
    return hmac.new(settings.SECRET_KEY.encode(), payload, hashlib.sha256).digest()


@functools.cache
def _lexical_code_version() -> str:
    # A change to the lexical code (tuning of its parameters included) invalidates every stored file.
    return hashlib.sha256(Path(lexical_module.__file__).read_bytes()).hexdigest()[:12]


def lexical_file(file_name: str, ids: Sequence[int], questions: Sequence[str]) -> Path:
    """Where the lexical index of these exact pairs, for this index file and lexical code, is kept."""
    digest = hashlib.blake2b(_lexical_code_version().encode(), digest_size=12)
    for pk, question in zip(ids, questions, strict=True):
        digest.update(f"{pk}\0{question}\0".encode())
    return index_dir() / f"{file_name}{LEXICAL_INFIX}{digest.hexdigest()}.pickle"


def lexical_index_for(file_name: str, ids: Sequence[int], questions: Sequence[str]) -> LexicalIndex:
    """The lexical index over these pairs: read from its file when one was stored, else built and stored."""
    path = lexical_file(file_name, ids, questions)
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    stored = None
    mac, payload = data[:_MAC_SIZE], data[_MAC_SIZE:]
    # Unpickling runs code: only a file this deployment signed (index files may one day live in
    # shared storage that others can write to) is ever unpickled.
    if payload and hmac.compare_digest(mac, _lexical_mac(payload)):
        gc.disable()  # millions of small objects: the collector would triple the load time
        try:
            stored = pickle.loads(payload)  # noqa: S301 - signed by lexical_index_for
        except Exception:  # noqa: BLE001 - a damaged file is rebuilt, never fatal
            stored = None
        finally:
            gc.enable()
    if isinstance(stored, LexicalIndex):
        return stored
    if data:
        logger.warning("Lexical index %s is unreadable or unsigned: rebuilding it.", path.name)
    built = LexicalIndex(list(ids), list(questions))
    payload = pickle.dumps(built, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        write_atomically(path, _lexical_mac(payload) + payload)
    except OSError as exc:
        logger.warning("Cannot store lexical index %s: %s", path.name, exc)
    return built


# --- the catalog: which corpora and live builds exist --------------------------------------


@dataclass(frozen=True)
class LiveBuild:
    id: int
    corpus_id: int
    encoder: str
    file_name: str
    dimension: int
    vector_count: int
    kind: str


@dataclass(frozen=True)
class CorpusEntry:
    id: int
    slug: str
    name: str
    default_encoder: str
    live: dict[str, LiveBuild] = field(default_factory=dict)

    def serving_encoder(self, fallback: str | None) -> str | None:
        """The encoder that answers when a request names none."""
        if self.default_encoder in self.live:
            return self.default_encoder
        if fallback and fallback in self.live:
            return fallback
        return next(iter(sorted(self.live)), None)


@dataclass(frozen=True)
class Catalog:
    corpora: dict[str, CorpusEntry]
    loaded_at: float


_catalog: Catalog | None = None
_catalog_lock = threading.Lock()


def catalog() -> Catalog:
    """A snapshot of corpora and live builds, at most AUTOCOMPLETE_CATALOG_TTL_SECONDS old."""
    global _catalog
    current = _catalog
    ttl = settings.AUTOCOMPLETE_CATALOG_TTL_SECONDS
    if current is not None and time.monotonic() - current.loaded_at < ttl:
        return current
    with _catalog_lock:
        if _catalog is None or time.monotonic() - _catalog.loaded_at >= ttl:
            _catalog = _read_catalog()
        return _catalog


def invalidate_catalog() -> None:
    global _catalog
    _catalog = None


def _read_catalog() -> Catalog:
    live: dict[int, dict[str, LiveBuild]] = {}
    for build in IndexBuild.objects.filter(is_active=True).values(
        "id", "corpus_id", "encoder", "file_name", "dimension", "vector_count", "kind"
    ):
        live.setdefault(build["corpus_id"], {})[build["encoder"]] = LiveBuild(**build)
    corpora = {
        corpus.slug: CorpusEntry(
            id=corpus.pk,
            slug=corpus.slug,
            name=corpus.name,
            default_encoder=corpus.default_encoder,
            live=live.get(corpus.pk, {}),
        )
        for corpus in Corpus.objects.order_by("name")
    }
    return Catalog(corpora=corpora, loaded_at=time.monotonic())


@receiver(post_delete, sender=IndexBuild)
def _delete_file_with_build(*, instance: IndexBuild, **kwargs: object) -> None:
    # After commit: a rolled-back delete must not lose the file of a build that still exists.
    file_name = instance.file_name
    transaction.on_commit(lambda: delete_index_file(file_name))
