"""The query encoder's training: a real short run lowers the loss and leaves complete questions in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embeddings.encoders import Encoder
from embeddings.query_encoder import (
    QueryEncoderError,
    TrainingConfig,
    distinct_questions,
    load_query_encoder,
    prefix_of,
    read_manifest,
    read_manifest_result,
    train_query_encoder,
)

from .conftest import QUERY_ENCODER_QUESTIONS


def test_a_short_run_lowers_the_prefix_loss(trained_query_encoder: Path) -> None:
    result = read_manifest_result(trained_query_encoder)
    assert result.steps == 6 and result.questions == len(QUERY_ENCODER_QUESTIONS)
    assert result.loss_after < result.loss_before - 0.01, result


def test_complete_questions_stay_where_the_corpus_encoder_puts_them(
    trained_query_encoder: Path, minilm: Encoder
) -> None:
    assert read_manifest_result(trained_query_encoder).identity_cosine > 0.97
    served = load_query_encoder(minilm.spec, trained_query_encoder, backend="onnx-int8", threads=1)
    cosines = np.sum(served.encode(QUERY_ENCODER_QUESTIONS) * minilm.encode(QUERY_ENCODER_QUESTIONS), axis=1)
    assert cosines.min() > 0.95, cosines


def test_prefixes_move_towards_their_questions(trained_query_encoder: Path, minilm: Encoder) -> None:
    targets = minilm.encode(QUERY_ENCODER_QUESTIONS)
    served = load_query_encoder(minilm.spec, trained_query_encoder, backend="onnx-int8", threads=1)
    prefixes = [prefix_of(question, 0.5) for question in QUERY_ENCODER_QUESTIONS]
    before = np.sum(minilm.encode(prefixes) * targets, axis=1).mean()
    after = np.sum(served.encode(prefixes) * targets, axis=1).mean()
    assert after > before


def test_the_served_query_encoder_has_its_own_vector_space(trained_query_encoder: Path, minilm: Encoder) -> None:
    served = load_query_encoder(minilm.spec, trained_query_encoder, backend="onnx-int8", threads=1)
    on_torch = load_query_encoder(minilm.spec, trained_query_encoder, backend="torch", threads=1)
    spaces = {served.vector_space, on_torch.vector_space, minilm.vector_space}
    assert len(spaces) == 3 and "query-" in served.vector_space
    assert served.spec is minilm.spec


def test_the_manifest_records_the_recipe(trained_query_encoder: Path) -> None:
    manifest = read_manifest(trained_query_encoder)
    assert manifest is not None
    assert manifest["config"]["seed"] == 3 and manifest["config"]["min_fraction"] == 0.15
    assert (trained_query_encoder / "onnx-int8" / "manifest.json").is_file()


def test_too_few_questions_are_refused(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(QueryEncoderError, match="at least 2 distinct questions"):
        train_query_encoder(model_dir, ["Only one?", "Only  one?"], np.ones((2, 384), np.float32), tmp_path / "q")
    assert not (tmp_path / "q").exists()


def test_a_directory_without_a_manifest_is_refused(tmp_path: Path, minilm: Encoder) -> None:
    with pytest.raises(QueryEncoderError, match="train_query_encoder"):
        load_query_encoder(minilm.spec, tmp_path, backend="onnx-int8", threads=1)


def test_questions_are_deduplicated_with_their_first_target() -> None:
    targets = np.arange(6, dtype=np.float32).reshape(3, 2)
    texts, rows = distinct_questions(["a  b", "a b", "c"], targets)
    assert texts == ["a b", "c"]
    np.testing.assert_array_equal(rows, targets[[0, 2]])


def test_prefixes_are_cut_as_evaluation_cuts_queries() -> None:
    assert prefix_of("abcdefghij", 0.15) == "ab"
    assert prefix_of("abc", 0.01) == "a"


def test_bad_recipes_are_refused() -> None:
    with pytest.raises(QueryEncoderError):
        TrainingConfig(min_fraction=0.9, max_fraction=0.5)
    with pytest.raises(QueryEncoderError):
        TrainingConfig(steps=0)
