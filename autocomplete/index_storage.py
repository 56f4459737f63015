"""Where index files are kept: Django's storage API, read through a local path.

By default the storage is the local directory `index_dir`, and files are read where they lie. A
deployment of several machines names a storage of `STORAGES` in `INDEX_STORAGE` (a shared directory,
S3 through django-storages...): a build is written there once, and each process that reads a file
the storage cannot hand it as a local path downloads it once into its own `index_cache_dir`, checked
against the checksum its build recorded before it is used. File names are unique and never reused,
so a copy in the cache never goes stale: it only goes when its build does.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from django.core.files.base import ContentFile, File
from django.core.files.storage import FileSystemStorage, Storage, storages

from embeddings.vector_index import write_atomically

from .conf import app_settings

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Names of files being written: never read, and removed with the orphans once old.
TEMP_PREFIX = ".tmp-"


class IndexFetchError(OSError):
    """A stored file could not be brought to this machine; `reason` says why in words, without paths."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def index_storage() -> Storage:
    """The storage holding index files: `STORAGES[INDEX_STORAGE]`, or the local `index_dir` by default."""
    conf = app_settings()
    if conf.index_storage:
        return storages[conf.index_storage]
    return FileSystemStorage(location=conf.index_dir)


def in_place_path(name: str, storage: Storage | None = None) -> Path | None:
    """The stored file's own local path, when the storage is a local file system; else None."""
    storage = storage or index_storage()
    # Other storages may answer path() with a name that is no file here (InMemoryStorage does).
    if not isinstance(storage, FileSystemStorage):
        return None
    try:
        return Path(storage.path(name))
    except NotImplementedError:
        return None


def is_local() -> bool:
    """Whether stored files are read in place, so no process keeps a copy of its own."""
    return in_place_path("probe") is not None


def local_path(name: str) -> Path:
    """Where this process reads a stored file: in place, or its copy in the cache (which may not exist yet)."""
    return in_place_path(name) or app_settings().index_cache_dir / name


def fetch(name: str, *, sha256: str | None = None) -> Path:
    """A local path holding the stored file, downloaded into the cache first if need be.

    `sha256` (the whole file's, as its build recorded it) is checked on download; a copy that
    differs is never kept. FileNotFoundError when the storage has no such file.
    """
    storage = index_storage()
    in_place = in_place_path(name, storage)
    if in_place is not None:
        return in_place
    path = app_settings().index_cache_dir / name
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as writer, storage.open(name, "rb") as reader:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        if sha256 is not None and digest.hexdigest() != sha256:
            raise IndexFetchError(
                f"{name} in the index storage differs from the file its build recorded.",
                reason="the stored index file differs from the one that was built",
            )
        os.replace(temp_name, path)
    except (FileNotFoundError, IndexFetchError):
        raise
    except Exception as exc:  # noqa: BLE001 - a storage backend raises its own errors (botocore...)
        raise IndexFetchError(
            f"{name} cannot be downloaded from the index storage: {exc}",
            reason="the index file cannot be downloaded from the index storage; check that it answers",
        ) from exc
    finally:
        Path(temp_name).unlink(missing_ok=True)
    logger.info("Index file %s downloaded into %s", name, path.parent)
    return path


def store(name: str, data: bytes) -> None:
    """Write a new file under `name`, once: readers see all of it or nothing.

    FileExistsError when the storage already holds that name (names are never reused).
    """
    storage = index_storage()
    path = in_place_path(name, storage)
    if path is not None:
        # A rename within the directory: a reader never sees half a file.
        write_atomically(path, data)
        return
    if storage.exists(name):
        raise FileExistsError(f"{name} is already in the index storage.")
    try:
        saved = storage.save(name, ContentFile(data))
        size = storage.size(saved)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - a storage backend raises its own errors (botocore...)
        raise OSError(f"{type(exc).__name__}: {exc}") from exc
    if saved != name:
        # Written at once by another process: theirs stays, as it holds the same content.
        storage.delete(saved)
        raise FileExistsError(f"{name} is already in the index storage.")
    if size != len(data):
        storage.delete(name)
        raise OSError(f"the index storage holds {size} bytes of {name} after {len(data)} were written")
    # This process will read it next: keep the copy rather than download it again.
    write_atomically(app_settings().index_cache_dir / name, data)


def stored_names(prefix: str = "") -> list[str]:
    """The names of the stored files that begin with `prefix`."""
    storage = index_storage()
    if (path := in_place_path("", storage)) is not None and not path.is_dir():
        return []
    return sorted(name for name in storage.listdir("")[1] if name.startswith(prefix))


def stored_age_seconds(name: str) -> float:
    """Seconds since the stored file was last written."""
    return time.time() - index_storage().get_modified_time(name).timestamp()


def delete(name: str) -> None:
    """Delete a stored file and this process's copy of it (a missing one is no error)."""
    index_storage().delete(name)
    if not is_local():
        (app_settings().index_cache_dir / name).unlink(missing_ok=True)


def prune_cache(is_kept: Callable[[str], bool], *, temp_age_seconds: float) -> list[str]:
    """Delete this process's copies of files for which `is_kept(name)` is false.

    A download in progress (a temp file, perhaps another process's on this machine) goes only once
    `temp_age_seconds` old.
    """
    directory = app_settings().index_cache_dir
    if is_local() or not directory.is_dir():
        return []
    cutoff = time.time() - temp_age_seconds
    removed = []
    for path in directory.iterdir():
        with contextlib.suppress(OSError):
            temporary = path.name.startswith(TEMP_PREFIX)
            stale = path.stat().st_mtime <= cutoff if temporary else not is_kept(path.name)
            if path.is_file() and stale:
                path.unlink()
                removed.append(path.name)
    return removed


def replace_stored(name: str, source: Path) -> None:
    """Put the file at `source` in the storage under `name`, replacing one there (a restore)."""
    storage = index_storage()
    path = in_place_path(name, storage)
    if path is None:
        storage.delete(name)
        with source.open("rb") as reader:
            storage.save(name, File(reader, name=name))
        (app_settings().index_cache_dir / name).unlink(missing_ok=True)
        return
    # Beside the target, then renamed: a server reading that name never sees half a file.
    with source.open("rb") as reader:
        write_atomically(path, reader)
