"""The deployment's knobs, read from environment variables.

Every variable the code reads goes through these functions, which record its name, so a test can
hold the README's configuration table to exactly the variables that exist.
"""

from __future__ import annotations

import os
from pathlib import Path

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
