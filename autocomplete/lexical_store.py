"""Lexical indexes stored beside their index file, so a serving process reads one instead of building it.

A file is a numpy .npz archive of plain numeric arrays, read with pickling refused: loading one runs
no code, whoever wrote it (index files may one day live in shared storage that others can write to).
It is not signed: damage is caught by the archive's checksums and the arrays' own consistency, and a
signature would tie every file to SECRET_KEY, so rotating the key would rebuild them all.
"""

from __future__ import annotations

import gc
import hashlib
import io
import logging
import zipfile
from collections.abc import Sequence

import numpy as np

from embeddings.lexical import LexicalIndex
from embeddings.synonyms import NO_SYNONYMS, SynonymMap

from .index_storage import fetch, in_place_path, store, stored_names

logger = logging.getLogger(__name__)

# Bump when LexicalIndex's stored arrays or its scoring change: files of another format are never
# read, so serving processes rebuild (and store) the index once.
LEXICAL_FORMAT = 3
LEXICAL_INFIX = ".lexical-"
LEXICAL_SUFFIX = ".npz"
# Lexical files of earlier formats: no process reads them any more, whichever index file they belong to.
RETIRED_LEXICAL_SUFFIXES = (".pickle",)


def lexical_file(
    index_file: str, ids: Sequence[int], questions: Sequence[str], *, synonyms: SynonymMap = NO_SYNONYMS
) -> str:
    """The stored name of the lexical index of these exact pairs and synonyms, for this index file and format."""
    digest = hashlib.blake2b(f"format {LEXICAL_FORMAT}".encode(), digest_size=12)
    if synonyms:
        digest.update(f"synonyms {synonyms.digest_text()}\0".encode())
    for pk, question in zip(ids, questions, strict=True):
        digest.update(f"{pk}\0{question}\0".encode())
    return f"{index_file}{LEXICAL_INFIX}{digest.hexdigest()}{LEXICAL_SUFFIX}"


def owner_of(file_name: str) -> str:
    """The index file a lexical file belongs to (a name that is no lexical file: itself)."""
    return file_name.split(LEXICAL_INFIX)[0]


def lexical_files_of(index_file: str) -> list[str]:
    """The names of every stored lexical file of an index file."""
    return stored_names(f"{index_file}{LEXICAL_INFIX}")


def lexical_index_for(
    index_file: str, ids: Sequence[int], questions: Sequence[str], *, synonyms: SynonymMap = NO_SYNONYMS
) -> LexicalIndex:
    """The lexical index over these pairs: read from its file when one was stored, else built and stored."""
    name = lexical_file(index_file, ids, questions, synonyms=synonyms)
    stored = _read(name, ids)
    if stored is not None:
        return stored
    built = LexicalIndex(list(ids), list(questions), synonyms=synonyms)
    # Uncompressed: reading it back is then little more than copying the arrays.
    archive = io.BytesIO()
    np.savez(archive, allow_pickle=False, **built.to_arrays())
    try:
        store(name, archive.getvalue())
    except OSError as exc:
        logger.warning("Cannot store lexical index %s: %s", name, exc)
    return built


def _read(name: str, ids: Sequence[int]) -> LexicalIndex | None:
    try:
        path = fetch(name)
    except OSError:  # none stored, or the storage does not answer: built here instead
        return None
    if not path.is_file():
        return None
    # The lookups rebuilt while loading are many small objects: the collector would run over and over.
    gc.disable()
    try:
        with np.load(path, allow_pickle=False) as arrays:
            # np.savez stores members uncompressed; a compressed one could inflate far past the file's size.
            if any(member.compress_type != zipfile.ZIP_STORED for member in arrays.zip.infolist()):
                raise ValueError("compressed member")
            stored = LexicalIndex.from_arrays(arrays)
    except Exception:  # noqa: BLE001 - a damaged file, or one of another format, is rebuilt, never fatal
        stored = None
    finally:
        gc.enable()
    # The name is a digest of the pairs, so ids that differ mean a file copied over another's name.
    if stored is not None and np.array_equal(stored.ids, np.asarray(ids, dtype=np.int64)):
        return stored
    logger.warning("Lexical index %s is unreadable or not this corpus's: rebuilding it.", name)
    if in_place_path(name) is None:
        path.unlink(missing_ok=True)  # this process's copy, downloaded again if the storage's is replaced
    return None
