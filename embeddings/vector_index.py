"""Vector indexes: build, search, serialise, save atomically, load and verify. The only faiss user.

An index file is a small self-describing container: a magic line, a JSON header (encoder,
dimension, count, kind, payload length and SHA-256) and faiss's own serialisation. A truncated
or altered file, or one built by another encoder, is refused with a message that says so.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import faiss
import numpy as np

MAGIC = b"SEMANTIC-AUTOCOMPLETE-INDEX\n"
# HNSW walked on 8-bit codes, candidates rescored on the float vectors. Files of the earlier kind
# "hnsw" (a graph over the float vectors) still load and serve until their corpus is re-indexed.
HNSW_KIND = "hnsw-sq8"
_HNSW_KINDS = frozenset({"hnsw", HNSW_KIND})
FORMAT_VERSION = 1
_HEADER_LENGTH = struct.Struct("<I")
# A subset up to this share of an index is searched exactly, in a copy of its own vectors: scanning
# a small copy costs less than walking the graph, and a graph walk that may return only a few
# members finds too few of a small subset. A larger subset is searched in place, its members
# picked out by a bitmap as the walk (or scan) goes, so it needs no copy.
EXACT_SUBSET_SHARE = 0.25


class IndexFileError(Exception):
    """An index file is missing, unreadable, truncated, corrupt or of an unknown format.

    The message names the file for the server log; `reason` says what is wrong without any path,
    fit to show to a visitor.
    """

    def __init__(self, message: str, *, reason: str = "the index file is corrupt") -> None:
        super().__init__(message)
        self.reason = reason


class IndexMismatchError(ValueError):
    """Vectors or a file do not belong to this index's encoder or dimension."""


@dataclass(frozen=True)
class HNSWOptions:
    """HNSW graph parameters: M links per node, build and search breadth."""

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128


def set_threads(count: int) -> None:
    """Cap faiss's OpenMP threads in this thread (workers x threads must not exceed cores).

    OpenMP keeps the cap per thread: a thread started later begins at the process default.
    """
    faiss.omp_set_num_threads(count)


def thread_cap() -> int:
    """The OpenMP threads faiss may use from this thread."""
    return int(faiss.omp_get_max_threads())


def _check_vectors(vectors: np.ndarray, dimension: int) -> np.ndarray:
    if vectors.ndim != 2 or vectors.shape[1] != dimension:
        raise IndexMismatchError(f"Expected vectors of shape (n, {dimension}), got {tuple(vectors.shape)}.")
    return np.ascontiguousarray(vectors, dtype=np.float32)


@dataclass(frozen=True)
class VectorSubset:
    """Some of an index's vectors (a tag filter's pairs), searched without the others: see VectorIndex.subset."""

    ids: np.ndarray  # the members' ids, in the order of `exact`'s rows when there is one
    exact: Any = None  # a flat index over a copy of the members' vectors (small subsets)
    params: Any = None  # faiss search parameters whose selector picks the members (large subsets)
    # What `params` points to (the selector's bits, inner parameters): faiss does not own them.
    keep: tuple[Any, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)


class VectorIndex:
    """Unit vectors keyed by integer ids, searched by inner product (cosine)."""

    def __init__(self, faiss_index: Any, *, encoder: str, kind: str) -> None:
        self._index = faiss_index
        self.encoder = encoder
        self.kind = kind

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Sequence[int] | np.ndarray,
        *,
        encoder: str,
        dimension: int,
        ann_threshold: int,
        hnsw: HNSWOptions | None = None,
    ) -> VectorIndex:
        """Exact search up to `ann_threshold` vectors, HNSW above it."""
        vectors = _check_vectors(vectors, dimension)
        id_array = np.asarray(ids, dtype=np.int64)
        if len(id_array) != len(vectors):
            raise IndexMismatchError(f"{len(id_array)} ids for {len(vectors)} vectors.")
        if len(np.unique(id_array)) != len(id_array):
            raise IndexMismatchError("Index ids must be unique.")
        inner: Any  # faiss's own index classes, which its stubs type only in part
        if len(vectors) > ann_threshold:
            options = hnsw or HNSWOptions()
            # The graph is walked on 8-bit codes (a quarter of the memory each hop reads) and the
            # candidates it finds are rescored exactly on the float vectors kept beside them, so
            # every cosine returned is exact. One quantisation range for all dimensions
            # (`uniform`): unit vectors spread alike in every dimension, so recall is that of a
            # range per dimension, and each distance decodes faster.
            uniform: Any = faiss.ScalarQuantizer.QT_8bit_uniform  # an enum value its stubs type as the class
            graph = faiss.IndexHNSWSQ(dimension, uniform, options.m, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = options.ef_construction
            graph.hnsw.efSearch = options.ef_search
            inner = faiss.IndexRefineFlat(graph)
            inner.train(vectors)
            kind = HNSW_KIND
        else:
            inner = faiss.IndexFlatIP(dimension)
            kind = "flat"
        index = faiss.IndexIDMap2(inner)
        if len(vectors):
            index.add_with_ids(vectors, id_array)
        return cls(index, encoder=encoder, kind=kind)

    @property
    def dimension(self) -> int:
        return int(self._index.d)

    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    @property
    def ef_search(self) -> int | None:
        """How many graph nodes a search visits (HNSW kinds), None for exact search."""
        graph = self._graph()
        return None if graph is None else int(graph.hnsw.efSearch)

    def _graph(self) -> Any:
        """The HNSW graph inside the id map (and the refinement, for hnsw-sq8), or None."""
        if self.kind not in _HNSW_KINDS:
            return None
        inner: Any = faiss.downcast_index(self._index.index)
        return faiss.downcast_index(inner.base_index) if self.kind == HNSW_KIND else inner

    def ids(self) -> np.ndarray:
        """All ids in insertion order."""
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def search(self, query: np.ndarray, k: int, *, subset: VectorSubset | None = None) -> list[tuple[int, float]]:
        """Top-k (id, cosine) pairs for one query vector, best first; among `subset`'s members only when given."""
        if subset is not None:
            return self._search_subset(query, k, subset)
        if k <= 0 or self.count == 0:
            return []
        matrix = _check_vectors(query.reshape(1, -1), self.dimension)
        scores, ids = self._index.search(matrix, min(k, self.count))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def subset(self, ids: Sequence[int] | np.ndarray) -> VectorSubset:
        """A subset of the indexed ids (every one must be indexed), prepared once for many searches."""
        members = np.unique(np.asarray(ids, dtype=np.int64))
        if not len(members):
            return VectorSubset(ids=members)
        positions = self._positions_of(members)
        if len(members) <= EXACT_SUBSET_SHARE * self.count:
            exact = faiss.IndexFlatIP(self.dimension)
            exact.add(self.vectors(members.tolist()))
            return VectorSubset(ids=members, exact=exact)
        bitmap = np.zeros((self.count + 7) // 8, dtype=np.uint8)
        np.bitwise_or.at(bitmap, positions >> 3, np.left_shift(1, positions & 7).astype(np.uint8))
        selector = faiss.IDSelectorBitmap(self.count, faiss.swig_ptr(bitmap))
        params, inner = self._selecting_params(selector)
        return VectorSubset(ids=members, params=params, keep=(bitmap, selector, *inner))

    def _selecting_params(self, selector: Any) -> tuple[Any, tuple[Any, ...]]:
        """Search parameters for the index inside the id map that keep only `selector`'s positions.

        Given to the inner index, not the id map: the id map would hand the selector its own ids,
        and its refinement step passes no selector down to the graph.
        """
        graph = self._graph()
        if graph is None:
            params = faiss.SearchParameters()
            params.sel = selector
            return params, ()
        walk: Any = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # absent from faiss's stubs
        walk.sel = selector
        walk.efSearch = int(graph.hnsw.efSearch)
        if self.kind != HNSW_KIND:
            return walk, ()
        refine = faiss.IndexRefineSearchParameters()
        inner: Any = faiss.downcast_index(self._index.index)
        refine.k_factor = float(inner.k_factor)
        refine.base_index_params = walk
        return refine, (walk,)

    def _search_subset(self, query: np.ndarray, k: int, subset: VectorSubset) -> list[tuple[int, float]]:
        k = min(k, len(subset))
        if k <= 0:
            return []
        matrix = _check_vectors(query.reshape(1, -1), self.dimension)
        if subset.exact is not None:
            scores, rows = subset.exact.search(matrix, k)
            found = rows[0] >= 0
            return list(zip(subset.ids[rows[0][found]].tolist(), scores[0][found].tolist(), strict=True))
        scores, positions = faiss.downcast_index(self._index.index).search(matrix, k, params=subset.params)
        found = positions[0] >= 0
        return list(zip(self._id_array[positions[0][found]].tolist(), scores[0][found].tolist(), strict=True))

    @functools.cached_property
    def _id_array(self) -> np.ndarray:
        return self.ids()

    @functools.cached_property
    def _id_order(self) -> np.ndarray:
        return np.argsort(self._id_array, kind="stable")

    def _positions_of(self, ids: np.ndarray) -> np.ndarray:
        """Where each id sits in the index (insertion order); IndexMismatchError for an id not indexed."""
        order = self._id_order
        found = np.searchsorted(self._id_array, ids, sorter=order)
        found = np.minimum(found, len(order) - 1)
        positions = order[found]
        if not np.array_equal(self._id_array[positions], ids):
            raise IndexMismatchError("A subset names ids that are not in the index.")
        return positions.astype(np.int64)

    def similarities(self, query: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """Cosine of the query with each given id (ids must be in the index)."""
        return self.vectors(ids) @ np.asarray(query, dtype=np.float32).reshape(-1)

    def nearest_others(self, ids: Sequence[int]) -> list[tuple[int, float] | None]:
        """For each given id, the closest other stored id and its cosine (None in a one-vector index)."""
        if not len(ids) or self.count < 2:
            return [None] * len(ids)
        scores, found = self._index.search(self.vectors(ids), min(3, self.count))
        nearest: list[tuple[int, float] | None] = []
        for own, row_ids, row_scores in zip(ids, found, scores, strict=True):
            # Two equal vectors tie at the top, in either order: skip the id itself wherever it is.
            other = [(int(i), float(s)) for i, s in zip(row_ids, row_scores, strict=True) if i not in (-1, own)]
            nearest.append(other[0] if other else None)
        return nearest

    def vectors(self, ids: Sequence[int]) -> np.ndarray:
        """The stored unit vectors of the given ids, one row each (ids must be in the index)."""
        if not len(ids):
            return np.zeros((0, self.dimension), dtype=np.float32)
        rows: np.ndarray = self._index.reconstruct_batch(np.asarray(ids, dtype=np.int64))
        return rows

    # --- serialisation ---------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The container: magic, header, faiss payload."""
        payload = faiss.serialize_index(self._index).tobytes()
        header = json.dumps(
            {
                "version": FORMAT_VERSION,
                "encoder": self.encoder,
                "dimension": self.dimension,
                "count": self.count,
                "kind": self.kind,
                "payload_bytes": len(payload),
                "payload_sha256": hashlib.sha256(payload).hexdigest(),
            }
        ).encode()
        return MAGIC + _HEADER_LENGTH.pack(len(header)) + header + payload

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        source: str = "<bytes>",
        encoder: str | None = None,
        dimension: int | None = None,
        ef_search: int | None = None,
    ) -> VectorIndex:
        """Parse and verify a container; `encoder`/`dimension` must match when given."""
        header, payload = _split_container(data, source)
        if encoder is not None and header.encoder != encoder:
            raise IndexMismatchError(f"{source} was built by encoder '{header.encoder}', not '{encoder}'.")
        if dimension is not None and header.dimension != dimension:
            raise IndexMismatchError(f"{source} holds {header.dimension}-d vectors, expected {dimension}.")
        try:
            faiss_index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError as exc:  # faiss reports a payload it cannot parse this way
            raise IndexFileError(f"{source} is corrupt: faiss cannot read it ({exc}).") from exc
        index = cls(faiss_index, encoder=header.encoder, kind=header.kind)
        if index.count != header.count or index.dimension != header.dimension:
            raise IndexFileError(
                f"{source} is corrupt: header says {header.count} x {header.dimension}, "
                f"payload holds {index.count} x {index.dimension}."
            )
        graph = index._graph()
        if ef_search is not None and graph is not None:
            graph.hnsw.efSearch = ef_search
        return index

    def save(self, path: Path) -> str:
        """Write atomically (temp file, fsync, rename); return the file's SHA-256."""
        data = self.to_bytes()
        write_atomically(path, data)
        return hashlib.sha256(data).hexdigest()

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        encoder: str | None = None,
        dimension: int | None = None,
        ef_search: int | None = None,
    ) -> VectorIndex:
        """Read and verify an index file."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        return cls.from_bytes(data, source=str(path), encoder=encoder, dimension=dimension, ef_search=ef_search)


def spherical_kmeans(
    vectors: np.ndarray, k: int, *, weights: np.ndarray | None = None, seed: int = 1234, iterations: int = 25
) -> np.ndarray:
    """k unit centroids of unit vectors by faiss's k-means (cosine), each vector counted `weights` times."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if not 0 < k <= len(matrix):
        raise ValueError(f"k-means needs 1 <= k <= {len(matrix)} vectors, got k={k}.")
    # Small inputs are the rule here (a few hundred queries): faiss's sampling bounds and its
    # warning about few points per centroid are meant for millions.
    kmeans = faiss.Kmeans(
        matrix.shape[1],
        k,
        niter=iterations,
        seed=seed,
        spherical=True,
        min_points_per_centroid=1,
        max_points_per_centroid=max(256, len(matrix)),
    )
    kmeans.train(matrix, weights=None if weights is None else np.ascontiguousarray(weights, dtype=np.float32))
    return np.asarray(kmeans.centroids, dtype=np.float32)


@dataclass(frozen=True)
class IndexHeader:
    """What an index file says about itself, read without loading its vectors."""

    encoder: str
    dimension: int
    count: int
    kind: str
    payload_bytes: int
    payload_sha256: str


_PREFIX_LENGTH = len(MAGIC) + _HEADER_LENGTH.size


def read_index_header(path: Path) -> IndexHeader:
    """Check an index file cheaply: readable, a known format, and exactly as long as its header says.

    Reads a few hundred bytes, never the vectors: a truncated or missing file is found; a corrupt
    payload of the right length is found only by `VectorIndex.load`, which checks its checksum.
    """
    try:
        with Path(path).open("rb") as handle:
            prefix = handle.read(_PREFIX_LENGTH)
            header_length = _header_length(prefix, str(path))
            header = _parse_header(handle.read(header_length), str(path))
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    found = size - _PREFIX_LENGTH - header_length
    if found != header.payload_bytes:
        state = "truncated" if found < header.payload_bytes else "corrupt"
        raise IndexFileError(
            f"{path} is {state}: its header promises {header.payload_bytes} payload bytes, the file holds {found}.",
            reason=f"the index file is {state}",
        )
    return header


def _unreadable(path: Path, exc: OSError) -> IndexFileError:
    if isinstance(exc, FileNotFoundError):
        return IndexFileError(f"Index file {path} does not exist.", reason="the index file is missing")
    words = os.strerror(exc.errno).lower() if exc.errno else str(exc) or type(exc).__name__
    return IndexFileError(f"Index file {path} cannot be read: {exc}", reason=f"the index file cannot be read ({words})")


def _header_length(prefix: bytes, source: str) -> int:
    if not prefix.startswith(MAGIC):
        raise IndexFileError(
            f"{source} is not a semantic-autocomplete index file.",
            reason="the index file is not in the format of this application",
        )
    if len(prefix) < _PREFIX_LENGTH:
        raise IndexFileError(f"{source} is truncated (no header).", reason="the index file is truncated")
    (length,) = _HEADER_LENGTH.unpack_from(prefix, len(MAGIC))
    return int(length)


def _parse_header(raw: bytes, source: str) -> IndexHeader:
    try:
        header = json.loads(raw)
        if header.get("version") != FORMAT_VERSION:
            raise IndexFileError(
                f"{source} has format version {header.get('version')}, expected {FORMAT_VERSION}.",
                reason="the index file has an unknown format version",
            )
        return IndexHeader(
            encoder=str(header["encoder"]),
            dimension=int(header["dimension"]),
            count=int(header["count"]),
            kind=str(header["kind"]),
            payload_bytes=int(header["payload_bytes"]),
            payload_sha256=str(header["payload_sha256"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IndexFileError(
            f"{source} is truncated or corrupt (unreadable header).", reason="the index file is truncated or corrupt"
        ) from exc


def _split_container(data: bytes, source: str) -> tuple[IndexHeader, bytes]:
    header_length = _header_length(data[:_PREFIX_LENGTH], source)
    header = _parse_header(data[_PREFIX_LENGTH : _PREFIX_LENGTH + header_length], source)
    payload = data[_PREFIX_LENGTH + header_length :]
    if len(payload) != header.payload_bytes:
        state = "truncated" if len(payload) < header.payload_bytes else "corrupt"
        raise IndexFileError(
            f"{source} is {state}: expected {header.payload_bytes} payload bytes, found "
            f"{len(payload)}. Rebuild it (manage.py ingest or reindex).",
            reason=f"the index file is {state}",
        )
    if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
        raise IndexFileError(f"{source} is corrupt: payload checksum mismatch. Rebuild it.")
    return header, payload


def write_atomically(path: Path, data: bytes | BinaryIO) -> None:
    """Write `data` (bytes, or a file read to its end) to `path` so that readers see the old file or
    the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                shutil.copyfileobj(data, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    # The rename itself must reach the disk too.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
