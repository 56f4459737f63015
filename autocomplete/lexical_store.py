"""Lexical indexes stored beside their index file, so a serving process reads one instead of building it.

A file is a pickle signed with SECRET_KEY: unpickling runs code, so only a file this deployment
wrote is ever loaded (index files may one day live in shared storage that others can write to).
"""

from __future__ import annotations

import gc
import hashlib
import hmac
import logging
import pickle  # noqa: S403 - loaded only when its HMAC under SECRET_KEY verifies
from collections.abc import Sequence
from pathlib import Path

from django.conf import settings

from embeddings.lexical import LexicalIndex
from embeddings.vector_index import write_atomically

from .conf import app_settings

logger = logging.getLogger(__name__)

# Bump when LexicalIndex's pickled state or its scoring changes: files of another format are
# never read, so serving processes rebuild (and store) the index once.
LEXICAL_FORMAT = 2
LEXICAL_INFIX = ".lexical-"
_MAC_SIZE = hashlib.sha256().digest_size


def sign(payload: bytes) -> bytes:
    """The HMAC a stored lexical file carries before its payload."""
    return hmac.new(settings.SECRET_KEY.encode(), payload, hashlib.sha256).digest()


def lexical_file(index_file: str, ids: Sequence[int], questions: Sequence[str]) -> Path:
    """Where the lexical index of these exact pairs, for this index file and format, is kept."""
    digest = hashlib.blake2b(f"format {LEXICAL_FORMAT}".encode(), digest_size=12)
    for pk, question in zip(ids, questions, strict=True):
        digest.update(f"{pk}\0{question}\0".encode())
    return app_settings().index_dir / f"{index_file}{LEXICAL_INFIX}{digest.hexdigest()}.pickle"


def owner_of(file_name: str) -> str:
    """The index file a lexical file belongs to (a name that is no lexical file: itself)."""
    return file_name.split(LEXICAL_INFIX)[0]


def lexical_files_of(index_file: str) -> list[Path]:
    """Every stored lexical file of an index file."""
    return list(app_settings().index_dir.glob(f"{index_file}{LEXICAL_INFIX}*"))


def lexical_index_for(index_file: str, ids: Sequence[int], questions: Sequence[str]) -> LexicalIndex:
    """The lexical index over these pairs: read from its file when one was stored, else built and stored."""
    path = lexical_file(index_file, ids, questions)
    stored = _read(path)
    if stored is not None:
        return stored
    built = LexicalIndex(list(ids), list(questions))
    payload = pickle.dumps(built, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        write_atomically(path, sign(payload) + payload)
    except OSError as exc:
        logger.warning("Cannot store lexical index %s: %s", path.name, exc)
    return built


def _read(path: Path) -> LexicalIndex | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    mac, payload = data[:_MAC_SIZE], data[_MAC_SIZE:]
    stored = None
    if payload and hmac.compare_digest(mac, sign(payload)):
        gc.disable()  # millions of small objects: the collector would run many times while loading
        try:
            stored = pickle.loads(payload)  # noqa: S301 - signed by lexical_index_for
        except Exception:  # noqa: BLE001 - a damaged file is rebuilt, never fatal
            stored = None
        finally:
            gc.enable()
    if isinstance(stored, LexicalIndex):
        return stored
    logger.warning("Lexical index %s is unreadable or unsigned: rebuilding it.", path.name)
    return None
