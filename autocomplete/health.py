"""Health: liveness and readiness as probes ask them (/healthz, /readyz), and each live index file's state.

Liveness says the process answers and touches nothing else. Readiness says this process can serve
every live corpus: the database answers, each live index's encoder and index are loaded (loaded
now if they were not, so a process that joins after a re-index becomes ready by being asked).
What a visitor or a probe is told never names a server path; the log has the details.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, connection

from embeddings.encoders import EncoderError
from embeddings.vector_index import IndexFileError, read_index_header

from .catalog import CorpusEntry, LiveBuild, catalog
from .encoder_registry import encoder_registry
from .index_storage import index_storage, is_local, local_path
from .models import Corpus, IndexBuild
from .search import IndexUnavailableError, live_space, load_failure

logger = logging.getLogger(__name__)

READY = "ready"


@dataclass(frozen=True)
class Readiness:
    """Whether this process can serve every live corpus; if not, why, corpus by corpus."""

    reason: str = ""
    corpora: dict[str, dict[str, str]] = field(default_factory=dict)  # slug -> encoder -> READY or what is wrong

    @property
    def ready(self) -> bool:
        return not self.reason

    def as_json(self) -> dict[str, Any]:
        status = {"status": READY} if self.ready else {"status": "unavailable", "reason": self.reason}
        return status | {"corpora": self.corpora}


def liveness() -> dict[str, str]:
    """The process is up and answering; nothing else is touched."""
    return {"status": "ok"}


def readiness() -> Readiness:
    """Check the database, then load (or find loaded) every live corpus's encoder and index."""
    try:
        _ping_database()
        entries = list(catalog().corpora.values())
        corpora = {entry.slug: _corpus_states(entry) for entry in entries}
    except DatabaseError as exc:
        logger.error("Not ready: the database cannot be reached: %s", exc)
        return Readiness("The database cannot be reached.")
    problems = [
        f"corpus '{slug}' ({encoder}): {state}"
        for slug, states in corpora.items()
        for encoder, state in states.items()
        if state != READY
    ]
    return Readiness(f"Cannot serve {'; '.join(problems)}." if problems else "", corpora)


def _ping_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _corpus_states(entry: CorpusEntry) -> dict[str, str]:
    return {key: _serving_problem(key, build, entry) or READY for key, build in sorted(entry.live.items())}


def _serving_problem(key: str, build: LiveBuild, entry: CorpusEntry) -> str | None:
    try:
        encoder_registry().get(key)
    except EncoderError as exc:
        logger.error("Not ready: encoder %s cannot be loaded: %s", key, exc)
        return "the encoder cannot be loaded (the server log says why)"
    try:
        # With the corpus's synonyms: the space a request would use, not another to load.
        live_space(build, synonyms=entry.controls.synonyms)
    except IndexUnavailableError as exc:
        return exc.reason
    return None


# --- what the admin shows ------------------------------------------------------------------------


def index_file_problem(build: IndexBuild) -> str | None:
    """What is wrong with a live build's file, found cheaply (its header and size, never its vectors).

    A file whose payload is damaged at the right length passes here; once a serving process in
    this process has failed to load it, that failure is reported too.
    """
    path = local_path(build.file_name)
    if not is_local() and not path.is_file():
        # Not downloaded here yet: whether the storage holds it is all that is cheap to know.
        return load_failure(build) if index_storage().exists(build.file_name) else "the index file is missing"
    try:
        header = read_index_header(path)
    except IndexFileError as exc:
        return exc.reason
    if (header.encoder, header.dimension, header.count) != (build.encoder, build.dimension, build.vector_count):
        return "the index file does not match what the database recorded"
    return load_failure(build)


def corpus_index_problems(corpus: Corpus) -> dict[str, str]:
    """Encoder -> what is wrong, for each of the corpus's live builds that needs a re-index."""
    builds = corpus.index_builds.filter(is_live=True).order_by("encoder")
    return {build.encoder: problem for build in builds if (problem := index_file_problem(build))}
