"""Test settings: the same app, with throwaway storage and fast password hashing.

A few paths can be set from the environment so that a worker subprocess started by a test
(`manage.py db_worker`) shares the test's database file, index directory and ONNX exports.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .settings import *  # noqa: F403

_TEST_VAR = Path(tempfile.mkdtemp(prefix="autocomplete-test-"))
# each test gets its own index directory via a fixture
AUTOCOMPLETE_INDEX_DIR = Path(os.environ.get("AUTOCOMPLETE_INDEX_DIR", _TEST_VAR / "indexes"))
AUTOCOMPLETE_UPLOAD_DIR = Path(os.environ.get("AUTOCOMPLETE_UPLOAD_DIR", _TEST_VAR / "uploads"))
# On disk rather than in memory, so worker subprocesses and live-server threads see the same data.
DATABASES["default"]["TEST"] = {"NAME": str(_TEST_VAR / "test.sqlite3")}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Serving processes in tests see a switch of live index at once.
AUTOCOMPLETE_CATALOG_TTL_SECONDS = 0.0
AUTOCOMPLETE_DEFAULT_ENCODER = "minilm"
# minilm runs as it is served (ONNX int8, exported once per test session); models that tests
# build with random weights run on torch, whose output the ONNX export is checked against.
AUTOCOMPLETE_ENCODER_BACKEND = "torch"
AUTOCOMPLETE_ENCODERS = {**AUTOCOMPLETE_ENCODERS, "minilm": {"BACKEND": "onnx-int8"}}  # noqa: F405
AUTOCOMPLETE_ONNX_DIR = Path(os.environ.get("AUTOCOMPLETE_ONNX_DIR", _TEST_VAR / "onnx"))
# Jobs run inside the request unless a test switches to the database backend and a real worker.
TASKS = {
    "default": {
        "BACKEND": os.environ.get("AUTOCOMPLETE_TASKS_BACKEND", "django_tasks.backends.immediate.ImmediateBackend"),
        "QUEUES": ["default"],
    }
}
