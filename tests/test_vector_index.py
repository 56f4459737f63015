"""Vector index: round trip, refusals, atomic saves, exact vs approximate search."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np
import pytest

from embeddings import vector_index as index_module
from embeddings.vector_index import IndexFileError, IndexMismatchError, VectorIndex, read_index_header, spherical_kmeans


def unit_vectors(n: int, dim: int = 384, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    unit: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


def build(n: int = 50, *, ann_threshold: int = 1000, encoder: str = "minilm") -> tuple[VectorIndex, np.ndarray]:
    vectors = unit_vectors(n)
    ids = np.arange(100, 100 + n)
    return VectorIndex.build(vectors, ids, encoder=encoder, dimension=384, ann_threshold=ann_threshold), vectors


def test_search_finds_each_vector_by_its_id() -> None:
    index, vectors = build()
    assert index.kind == "flat" and index.count == 50
    for row in (0, 17, 49):
        (best_id, score), *_ = index.search(vectors[row], 3)
        assert best_id == 100 + row
        assert score == pytest.approx(1.0, abs=1e-5)


def test_similarities_match_inner_products() -> None:
    index, vectors = build()
    sims = index.similarities(vectors[3], [100, 105, 103])
    np.testing.assert_allclose(sims, vectors[[0, 5, 3]] @ vectors[3], atol=1e-5)
    assert index.similarities(vectors[3], []).shape == (0,)


def test_vectors_returns_the_stored_rows_by_id() -> None:
    index, vectors = build()
    np.testing.assert_allclose(index.vectors([107, 100]), vectors[[7, 0]], atol=1e-6)
    assert index.vectors([]).shape == (0, index.dimension)


def test_save_load_round_trip(tmp_path: Path) -> None:
    index, vectors = build()
    path = tmp_path / "a.faiss"
    checksum = index.save(path)
    assert len(checksum) == 64
    loaded = VectorIndex.load(path, encoder="minilm", dimension=384)
    assert (loaded.count, loaded.dimension, loaded.encoder, loaded.kind) == (50, 384, "minilm", "flat")
    assert loaded.search(vectors[7], 5) == index.search(vectors[7], 5)
    np.testing.assert_array_equal(loaded.ids(), np.arange(100, 150))


def test_truncated_file_gives_a_clear_error(tmp_path: Path) -> None:
    index, _ = build()
    path = tmp_path / "a.faiss"
    index.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(IndexFileError, match="truncated: expected .* payload bytes"):
        VectorIndex.load(path)
    path.write_bytes(data[:20])
    with pytest.raises(IndexFileError, match="not a semantic-autocomplete index"):
        VectorIndex.load(path)
    path.write_bytes(data[: len(index_module.MAGIC) + 10])
    with pytest.raises(IndexFileError, match="truncated or corrupt"):
        VectorIndex.load(path)


def test_corrupted_payload_is_detected(tmp_path: Path) -> None:
    index, _ = build()
    path = tmp_path / "a.faiss"
    index.save(path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum mismatch"):
        VectorIndex.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match="does not exist"):
        VectorIndex.load(tmp_path / "none.faiss")


def test_index_refuses_another_encoder_or_dimension(tmp_path: Path) -> None:
    index, _ = build(encoder="gist-small")
    path = tmp_path / "g.faiss"
    index.save(path)
    with pytest.raises(IndexMismatchError, match="built by encoder 'gist-small', not 'ivysaur'"):
        VectorIndex.load(path, encoder="ivysaur")
    with pytest.raises(IndexMismatchError, match="expected 768"):
        VectorIndex.load(path, dimension=768)
    with pytest.raises(IndexMismatchError, match=r"shape \(n, 384\)"):
        VectorIndex.build(unit_vectors(3, dim=768), [1, 2, 3], encoder="x", dimension=384, ann_threshold=10)
    with pytest.raises(IndexMismatchError, match=r"shape \(n, 384\)"):
        index.search(np.ones(768, dtype=np.float32), 3)
    with pytest.raises(IndexMismatchError, match="unique"):
        VectorIndex.build(unit_vectors(2), [1, 1], encoder="x", dimension=384, ann_threshold=10)


def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, _ = build(10)
    path = tmp_path / "live.faiss"
    old.save(path)
    before = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    new, _ = build(30)
    with pytest.raises(OSError, match="disk full"):
        new.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["live.faiss"]  # no temp file left behind


def test_large_corpora_get_an_approximate_index_with_good_recall(tmp_path: Path) -> None:
    index, vectors = build(600, ann_threshold=500)
    assert index.kind == "hnsw-sq8"
    # The graph walks 8-bit codes, but stored vectors and returned cosines are the exact floats.
    np.testing.assert_array_equal(index.vectors([100, 599]), vectors[[0, 499]])
    query = unit_vectors(1, seed=3)[0]
    for pk, score in index.search(query, 10):
        assert score == pytest.approx(float(vectors[pk - 100] @ query), abs=1e-6)
    exact, _ = build(600, ann_threshold=10_000)
    queries = unit_vectors(20, seed=1)
    recall = np.mean(
        [len({i for i, _ in index.search(q, 10)} & {i for i, _ in exact.search(q, 10)}) / 10 for q in queries]
    )
    assert recall >= 0.9
    path = tmp_path / "h.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, ef_search=64)
    assert loaded.kind == "hnsw-sq8"
    assert loaded.ef_search == 64
    assert loaded.search(vectors[5], 1)[0][0] == 105
    np.testing.assert_allclose(loaded.similarities(vectors[5], [105]), [1.0], atol=1e-5)


def test_empty_index_answers_nothing() -> None:
    index = VectorIndex.build(np.zeros((0, 384), np.float32), [], encoder="m", dimension=384, ann_threshold=10)
    assert index.search(unit_vectors(1)[0], 5) == []


def test_index_files_of_the_earlier_float_graph_still_load(tmp_path: Path) -> None:
    # Files written before the 8-bit graph (kind "hnsw") keep serving until their corpus is re-indexed.
    vectors = unit_vectors(300)
    graph = faiss.IndexHNSWFlat(384, 16, faiss.METRIC_INNER_PRODUCT)
    old = faiss.IndexIDMap2(graph)
    old.add_with_ids(vectors, np.arange(100, 400))
    path = tmp_path / "old.faiss"
    VectorIndex(old, encoder="minilm", kind="hnsw").save(path)
    loaded = VectorIndex.load(path, ef_search=32)
    assert loaded.kind == "hnsw"
    assert loaded.ef_search == 32
    assert loaded.search(vectors[7], 1)[0][0] == 107


def test_the_header_alone_tells_a_truncated_or_grown_file(tmp_path: Path) -> None:
    index, _ = build()
    path = tmp_path / "a.faiss"
    index.save(path)
    header = read_index_header(path)
    assert (header.encoder, header.dimension, header.count, header.kind) == ("minilm", 384, index.count, "flat")
    data = path.read_bytes()
    for damaged, reason in ((data[:-1], "truncated"), (data + b"x", "corrupt"), (b"junk", "not in the format")):
        path.write_bytes(damaged)
        with pytest.raises(IndexFileError) as raised:
            read_index_header(path)
        assert reason in raised.value.reason and str(tmp_path) not in raised.value.reason
    path.unlink()
    with pytest.raises(IndexFileError, match="does not exist") as raised:
        read_index_header(path)
    assert raised.value.reason == "the index file is missing"


def test_nearest_others_skips_the_vector_itself_even_on_a_tie() -> None:
    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 2]]  # ids 7 and 8 hold the same vector
    vectors[3] = (vectors[2] + np.eye(4, dtype=np.float32)[3]) / np.sqrt(2)
    index = VectorIndex.build(vectors, [7, 8, 9, 10], encoder="t", dimension=4, ann_threshold=100)
    nearest = index.nearest_others([7, 8, 9, 10])
    assert [pk for pk, _ in nearest] == [8, 7, 10, 9]  # type: ignore[misc]
    assert nearest[0][1] == pytest.approx(1.0) and nearest[2][1] == pytest.approx(np.sqrt(0.5))  # type: ignore[index]
    single = VectorIndex.build(vectors[:1], [1], encoder="t", dimension=4, ann_threshold=100)
    assert single.nearest_others([1]) == [None]


def test_spherical_kmeans_finds_weighted_unit_centroids() -> None:
    rng = np.random.default_rng(0)
    centres = np.eye(8, dtype=np.float32)[:3]
    points = np.repeat(centres, 20, axis=0) + rng.normal(scale=0.05, size=(60, 8)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    centroids = spherical_kmeans(points, 3, weights=np.ones(60))
    assert np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    assert sorted(int(np.argmax(c)) for c in centroids) == [0, 1, 2]
    with pytest.raises(ValueError, match="k-means needs"):
        spherical_kmeans(points[:2], 3)


@pytest.mark.parametrize("ann_threshold", [10**9, 50])
@pytest.mark.parametrize("share", [0.05, 0.2, 0.6, 1.0])
def test_subset_search_returns_only_members_and_their_exact_best(ann_threshold: int, share: float) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((400, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(400) * 7 + 3
    index = VectorIndex.build(vectors, ids, encoder="t", dimension=16, ann_threshold=ann_threshold)
    members = ids[rng.random(400) < share] if share < 1 else ids
    subset = index.subset(members[::-1])  # any order
    assert len(subset) == len(members)
    query = vectors[5]
    found = index.search(query, 10, subset=subset)
    assert len(found) == 10 and {i for i, _ in found} <= set(members.tolist())
    truth = sorted(members.tolist(), key=lambda i: -float(vectors[(i - 3) // 7] @ query))[:10]
    # Small subsets are searched exactly; large ones through the graph, which may miss one.
    assert len({i for i, _ in found} & set(truth)) >= (10 if share <= 0.25 or index.kind == "flat" else 8)
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)


def test_an_empty_subset_finds_nothing_and_unknown_ids_are_refused() -> None:
    vectors = np.eye(4, dtype=np.float32)
    index = VectorIndex.build(vectors, [1, 2, 3, 4], encoder="t", dimension=4, ann_threshold=100)
    assert index.search(vectors[0], 3, subset=index.subset([])) == []
    assert index.search(vectors[0], 3, subset=index.subset([2])) == [(2, 0.0)]
    with pytest.raises(IndexMismatchError, match="not in the index"):
        index.subset([2, 9])
