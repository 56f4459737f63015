"""Test settings: the same app, with throwaway storage and fast password hashing.

The directories set in the environment win over the throwaway ones, so that a worker subprocess
started by a test (`manage.py db_worker`) shares the test's database file, index directory and
ONNX exports.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import MappingProxyType

# The settings refuse to start without a secret key when debug is off, as it is in tests. Set in the
# environment, so that the worker and server subprocesses that tests start share it.
os.environ.setdefault("DJANGO_SECRET_KEY", "test-settings-secret-key-never-used-outside-tests-0123456789")

from .environment import env_str  # noqa: E402
from .settings import *  # noqa: E402, F403
from .settings import AUTOCOMPLETE, DATABASES, database_from_url  # noqa: E402

_TEST_VAR = Path(tempfile.mkdtemp(prefix="autocomplete-test-"))
# PostgreSQL when this names a server (e.g. postgres://postgres@127.0.0.1:5432/test): pytest-django
# creates and drops its own test database beside the one named (test_test). A subprocess that a test
# starts is given the test database itself in this variable (tests/conftest.py, `database_env`).
_TEST_DATABASE_URL = env_str("AUTOCOMPLETE_TEST_DATABASE_URL")
if _TEST_DATABASE_URL:
    DATABASES["default"] = database_from_url(_TEST_DATABASE_URL, _TEST_VAR / "unused.sqlite3")
else:
    # On disk rather than in memory, so worker subprocesses and live-server threads see the same data.
    DATABASES["default"]["TEST"] = {"NAME": str(_TEST_VAR / "test.sqlite3")}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Read-only: tests change it through the `configure` fixture (tests/conftest.py), never in place.
AUTOCOMPLETE = MappingProxyType(
    {
        **AUTOCOMPLETE,
        # Each test gets its own index directory through a fixture; a worker subprocess is told the test's.
        "INDEX_DIR": AUTOCOMPLETE.get("INDEX_DIR") or _TEST_VAR / "indexes",
        "UPLOAD_DIR": AUTOCOMPLETE.get("UPLOAD_DIR") or _TEST_VAR / "uploads",
        "ONNX_DIR": AUTOCOMPLETE.get("ONNX_DIR") or _TEST_VAR / "onnx",
        "QUERY_ENCODER_DIR": _TEST_VAR / "query-encoders",
        # Serving processes in tests see a switch of live index at once.
        "CATALOG_TTL_SECONDS": 0.0,
        "DEFAULT_ENCODER": "minilm",
        # minilm runs as it is served (ONNX int8, exported once per test session); models that tests
        # build with random weights run on torch, whose output the ONNX export is checked against.
        "ENCODER_BACKEND": "torch",
        "ENCODERS": {**AUTOCOMPLETE["ENCODERS"], "minilm": {"BACKEND": "onnx-int8"}},
        # Every test client shares one address, and many tests send more than a visitor would: the
        # tests of the limit itself (tests/test_rate_limit.py) turn it on.
        "RATE_LIMIT": False,
    }
)
# Jobs run inside the request unless a test switches to the database backend and a real worker.
TASKS = {
    "default": {
        "BACKEND": env_str("AUTOCOMPLETE_TASKS_BACKEND") or "django_tasks.backends.immediate.ImmediateBackend",
        "QUEUES": ["default"],
    }
}
