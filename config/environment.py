"""The deployment's knobs, read from environment variables.

Every variable the code reads goes through these functions, which record its name, so a test can
hold the README's configuration table to exactly the variables that exist.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured

READ: set[str] = set()
_TRUE = frozenset({"1", "true", "yes", "on"})


def env_str(name: str, default: str | None = None) -> str | None:
    """The variable's value, or `default` when it is unset (an empty value is a value: "off")."""
    READ.add(name)
    return os.environ.get(name, default)


def env_int(name: str, default: int | None = None) -> int | None:
    value = env_str(name)
    return int(value) if value else default


def env_float(name: str, default: float | None = None) -> float | None:
    value = env_str(name)
    return float(value) if value else default


def env_bool(name: str, default: bool | None = None) -> bool | None:
    READ.add(name)
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in _TRUE


def env_path(name: str, default: Path | None = None) -> Path | None:
    value = env_str(name)
    return Path(value) if value else default


def env_json(name: str) -> dict[str, Any] | None:
    """A JSON object, or None when the variable is unset or empty."""
    value = env_str(name)
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON ({exc}); write it as a JSON object.") from None
    if not isinstance(parsed, dict):
        raise ImproperlyConfigured(f'{name} must be a JSON object, e.g. {{"BACKEND": "...", "OPTIONS": {{}}}}.')
    return parsed
