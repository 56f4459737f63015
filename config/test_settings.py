"""Test settings: the same app, with throwaway storage and fast password hashing."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .settings import *  # noqa: F403

_TEST_VAR = Path(tempfile.mkdtemp(prefix="autocomplete-test-"))
AUTOCOMPLETE_INDEX_DIR = _TEST_VAR / "indexes"  # each test gets its own via a fixture
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Serving processes in tests see a switch of live index at once.
AUTOCOMPLETE_CATALOG_TTL_SECONDS = 0.0
AUTOCOMPLETE_DEFAULT_ENCODER = "minilm"
# minilm runs as it is served (ONNX int8, exported once per test session); models that tests
# build with random weights run on torch, whose output the ONNX export is checked against.
AUTOCOMPLETE_ENCODER_BACKEND = "torch"
AUTOCOMPLETE_ENCODERS = {**AUTOCOMPLETE_ENCODERS, "minilm": {"BACKEND": "onnx-int8"}}  # noqa: F405
AUTOCOMPLETE_ONNX_DIR = _TEST_VAR / "onnx"
