"""A storage over a directory that, like S3, hands out no local path: files go through open() and save().

Several test processes share one through `AUTOCOMPLETE_INDEX_STORAGE`, as servers share a bucket.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from django.core.files import File
from django.core.files.storage import Storage
from django.utils.deconstruct import deconstructible


@deconstructible
class SharedDirectoryStorage(Storage):
    def __init__(self, location: str) -> None:
        self.root = Path(location)

    def _file(self, name: str) -> Path:
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"{name!r} is not a plain file name.")
        return self.root / name

    def _open(self, name: str, mode: str = "rb") -> File[Any]:
        handle: IO[Any] = self._file(name).open(mode)
        return File(handle, name=name)

    def _save(self, name: str, content: Any) -> str:
        # Written beside, then renamed, as an object store makes an upload visible whole or not at all.
        self.root.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".upload-", dir=self.root)
        with os.fdopen(fd, "wb") as writer:
            for chunk in content.chunks():
                writer.write(chunk)
        os.replace(temp, self._file(name))
        return name

    def delete(self, name: str) -> None:
        self._file(name).unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return self._file(name).exists()

    def listdir(self, path: str) -> tuple[list[str], list[str]]:
        if not self.root.is_dir():
            return [], []
        return [], sorted(p.name for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".upload-"))

    def size(self, name: str) -> int:
        return self._file(name).stat().st_size

    def get_modified_time(self, name: str) -> datetime:
        return datetime.fromtimestamp(self._file(name).stat().st_mtime, UTC)

    def url(self, name: str | None) -> str:
        raise NotImplementedError("Index files are never served by URL.")
