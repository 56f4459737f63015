"""Uploaded files waiting for their job: stored under random names in a private directory.

The name the admin's file had is never used as a path, and the directory is never served. Django's
own temp files of uploads being received (FILE_UPLOAD_TEMP_DIR) are swept here too.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from django.conf import settings

from .conf import app_settings

_SUFFIX = ".upload"


def upload_dir() -> Path:
    directory = app_settings().upload_dir
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def store_upload(data: bytes) -> str:
    """Write `data` under a fresh random name readable by this user only; return the name."""
    name = secrets.token_hex(16) + _SUFFIX
    path = upload_dir() / name
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return name


def _path(name: str) -> Path:
    # Names come from store_upload; refuse anything else rather than trusting the database blindly.
    if not name.endswith(_SUFFIX) or Path(name).name != name:
        raise ValueError(f"Not a stored upload name: {name!r}")
    return upload_dir() / name


def read_upload(name: str) -> bytes:
    return _path(name).read_bytes()


def delete_upload(name: str) -> None:
    if name:
        _path(name).unlink(missing_ok=True)


def remove_stale_uploads(keep: set[str], *, min_age_seconds: float) -> list[str]:
    """Delete stored uploads no job still needs that are older than `min_age_seconds`."""
    cutoff = time.time() - min_age_seconds
    removed = []
    for path in upload_dir().glob("*" + _SUFFIX):
        if path.name not in keep and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def remove_stale_temp_files(*, min_age_seconds: float) -> list[str]:
    """Delete files in FILE_UPLOAD_TEMP_DIR older than `min_age_seconds`: left by killed requests.

    Django deletes such a file when its request ends; a worker killed mid-upload never does. The
    system temp directory (the setting unset) is shared with other programs and never swept.
    """
    if not settings.FILE_UPLOAD_TEMP_DIR:
        return []
    directory = Path(settings.FILE_UPLOAD_TEMP_DIR)
    if not directory.is_dir():
        return []
    cutoff = time.time() - min_age_seconds
    removed = []
    for path in directory.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(path.name)
        except FileNotFoundError:  # its request ended meanwhile
            continue
    return removed
