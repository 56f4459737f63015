"""The encoder contract, run against every encoder that can load here, and the load errors."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pytest

from embeddings.encoders import (
    BUILTIN_SPECS,
    Encoder,
    EncoderRegistry,
    EncoderUnavailableError,
    TorchEncoder,
    UnknownEncoderError,
    specs_from_settings,
)

SENTENCES = ["How do I reset my password?", "Wo ist der Bahnhof?", "", "a " * 400, "Pricing plans"]


@pytest.fixture(scope="module")
def registry(random_model_dirs: dict[str, Path]) -> EncoderRegistry:
    """Every built-in key: minilm from its package, the others from random-weight local copies."""
    specs = specs_from_settings({key: {"PATH": str(path)} for key, path in random_model_dirs.items()})
    return EncoderRegistry(specs)


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(BUILTIN_SPECS))
def test_encoder_contract(registry: EncoderRegistry, key: str) -> None:
    encoder = registry.get(key)
    first = encoder.encode(SENTENCES)
    second = encoder.encode(list(reversed(SENTENCES)))[::-1]
    assert first.dtype == np.float32
    assert first.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first, second, atol=1e-5)  # deterministic, order-independent
    assert encoder.encode([]).shape == (0, 384)


@pytest.mark.slow
def test_gist_small_uses_its_own_twelve_layers(registry: EncoderRegistry) -> None:
    ivysaur, gist = registry.get("ivysaur"), registry.get("gist-small")
    assert isinstance(ivysaur, TorchEncoder) and isinstance(gist, TorchEncoder)
    assert ivysaur.model[0].auto_model.config.num_hidden_layers == 6
    assert gist.model[0].auto_model.config.num_hidden_layers == 12
    assert not np.allclose(ivysaur.encode(["hello"]), gist.encode(["hello"]))


def test_minilm_meaning_is_real(minilm: Encoder) -> None:
    vectors = minilm.encode(["How do I reset my password?", "I forgot my password", "What is the capital of France?"])
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_missing_local_directory_names_the_fix(tmp_path: Path) -> None:
    specs = specs_from_settings({"ivysaur": {"PATH": str(tmp_path / "nowhere")}})
    with pytest.raises(EncoderUnavailableError) as error:
        EncoderRegistry(specs).get("ivysaur")
    message = str(error.value)
    assert "Ivysaur weights not found at" in message
    assert "AUTOCOMPLETE_IVYSAUR_PATH" in message and "fetch_encoders" in message


def test_hub_model_without_local_copy_names_the_fix() -> None:
    with pytest.raises(EncoderUnavailableError) as error:
        EncoderRegistry(BUILTIN_SPECS, allow_download=False).get("gist-small")
    message = str(error.value)
    assert "avsolatorio/GIST-small-Embedding-v0" in message
    assert "AUTOCOMPLETE_GIST_SMALL_PATH" in message and "downloads are off" in message


def test_wrong_model_dimension_is_refused(random_model_dirs: dict[str, Path]) -> None:
    specs = specs_from_settings(
        {"big": {"NAME": "Big", "HUB_ID": "x/big", "DIMENSION": 768, "PATH": str(random_model_dirs["ivysaur"])}}
    )
    with pytest.raises(EncoderUnavailableError, match="produces 384-d vectors, expected 768"):
        EncoderRegistry(specs).get("big")


def test_unknown_keys() -> None:
    with pytest.raises(UnknownEncoderError, match="Known encoders: gist-small, ivysaur, minilm"):
        EncoderRegistry(BUILTIN_SPECS).spec("bert-huge")
    with pytest.raises(UnknownEncoderError, match="needs NAME, HUB_ID and DIMENSION"):
        specs_from_settings({"custom": {"PATH": "/models/custom"}})
    with pytest.raises(EncoderUnavailableError, match="known backends"):
        specs = specs_from_settings({"minilm": {"BACKEND": "tensorflow"}})
        EncoderRegistry(specs).get("minilm")


def test_concurrent_first_use_loads_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="embeddings.encoders")
    registry = EncoderRegistry(BUILTIN_SPECS)
    got: list[Encoder] = []
    threads = [threading.Thread(target=lambda: got.append(registry.get("minilm"))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The registry logs each load it starts: one line for six concurrent first uses.
    loads = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Loading encoder")]
    assert loads == ["Loading encoder minilm (torch backend)"]
    assert len(got) == 6 and all(encoder is got[0] for encoder in got)


@pytest.mark.slow
def test_onnx_vector_space_names_the_export(random_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    # Stored and cached vectors are reused under `vector_space`: other weights or another export
    # format must never share one, or a re-export would mix two sets of vectors in one index.
    from embeddings.encoders import load_onnx_encoder
    from embeddings.onnx_export import EXPORT_FORMAT, model_fingerprint

    specs = specs_from_settings({key: {"PATH": str(path)} for key, path in random_model_dirs.items()})
    spaces = {}
    for key, path in random_model_dirs.items():
        encoder = load_onnx_encoder(specs[key], quantized=True, export_root=tmp_path, threads=1)
        assert encoder.vector_space == f"onnx-int8/f{EXPORT_FORMAT}-{model_fingerprint(path)[:12]}"
        spaces[key] = encoder.vector_space
    assert len(set(spaces.values())) == len(spaces)
