"""The one ranking path: the HTML view, the JSON view and the evaluation command all come here.

A live index build is loaded once per process into a SearchSpace (vectors plus the pairs' texts),
so answering a keystroke touches neither the disk nor the database.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import numpy as np
from django.core.cache import caches
from django.db import DatabaseError

from embeddings.encoders import Encoder, EncoderError, EncoderSpec
from embeddings.keys import KeyIndex
from embeddings.lexical import LexicalIndex
from embeddings.ranking import DEFAULT as DEFAULT_RANKING
from embeddings.ranking import RankingParams, embedding_text, hybrid_rank, semantic_rank
from embeddings.typed_query import TypedQuery
from embeddings.vector_index import IndexFileError, IndexMismatchError, VectorIndex

from .builds import load_live_index
from .catalog import CorpusEntry, LiveBuild, catalog, invalidate_catalog
from .conf import app_settings
from .encoder_registry import encoder_registry
from .keys import key_index, live_key_rows
from .lexical_store import lexical_index_for
from .models import IndexBuild, QAPair

logger = logging.getLogger(__name__)


class SearchError(Exception):
    """A request that cannot be answered; `status` is the HTTP status it maps to."""

    status = 400


class CorpusNotFoundError(SearchError):
    status = 404


class CorpusPrivateError(SearchError):
    status = 403


class EncoderNotIndexedError(SearchError):
    status = 400


class IndexUnavailableError(SearchError):
    """A corpus cannot answer here; `reason` says why in words, without server paths."""

    status = 503

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class ServiceUnavailableError(SearchError):
    """The database cannot be reached; the request may succeed in a moment."""

    status = 503


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _database_errors_as_unavailable(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn a database outage into a 503 the visitor can retry, never a 500."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except DatabaseError as exc:
            logger.warning("Database unavailable while answering a search: %s", exc)
            raise ServiceUnavailableError("Suggestions are briefly unavailable; try again in a moment.") from exc

    return wrapper


@dataclass(frozen=True)
class Suggestion:
    id: int
    question: str
    answer: str
    url: str
    score: float


@dataclass(frozen=True)
class SuggestResult:
    query: str
    corpus: CorpusEntry
    encoder: EncoderSpec
    suggestions: list[Suggestion]
    took_ms: float
    is_fallback: bool  # answered by another encoder than the corpus's default


class SearchSpace:
    """A vector index and a lexical index over the same pairs, with their texts, ready to rank."""

    def __init__(
        self,
        index: VectorIndex,
        rows: Iterable[tuple[int, str, str, str]],
        *,
        lexical: Callable[[list[int], list[str]], LexicalIndex] = LexicalIndex,
    ) -> None:
        self.index = index
        self.ids: list[int] = []
        self.questions: list[str] = []
        self.answers: list[str] = []
        self.urls: list[str] = []
        for pk, question, answer, url in rows:
            self.ids.append(pk)
            self.questions.append(question)
            self.answers.append(answer)
            self.urls.append(url)
        self.position = {pk: row for row, pk in enumerate(self.ids)}
        self.lexical = lexical(self.ids, self.questions)
        # Visitors' and imported wordings of the pairs, ranked beside the questions (autocomplete/keys.py).
        self.keys: KeyIndex | None = None

    def with_keys(self, keys: KeyIndex | None) -> SearchSpace:
        """The same space (indexes shared, not copied) ranking with `keys` too."""
        keyed = copy.copy(self)
        keyed.keys = keys if keys is not None and len(keys) else None
        return keyed

    def __len__(self) -> int:
        return len(self.ids)

    def suggestion(self, pk: int, score: float) -> Suggestion:
        row = self.position[pk]
        return Suggestion(pk, self.questions[row], self.answers[row], self.urls[row], round(score, 4))


Embed = Callable[[str], np.ndarray]
METHODS = ("hybrid", "semantic", "lexical")


def rank(
    space: SearchSpace,
    query: str,
    *,
    embed: Embed,
    k: int,
    method: str = "hybrid",
    params: RankingParams = DEFAULT_RANKING,
) -> list[Suggestion]:
    """The top-k suggestions for what has been typed, best first, no question text twice.

    `hybrid` is what is served; `semantic` (plain cosine) and `lexical` (keywords alone) exist as
    the evaluation's baselines.
    """
    typed = TypedQuery.parse(query)
    if method == "lexical":
        ranked = space.lexical.search(typed, limit=k * 4)
        ranked = [(pk, score) for pk, score in ranked if score > 0]
        ranked = semantic_rank(ranked, k=k, lexical=space.lexical)
    else:
        # The baseline embeds what was typed; the served ranking may complete the last word first.
        vector = embed(query if method == "semantic" else embedding_text(typed, space.lexical, params))
        nearest = space.index.search(vector, params.semantic_candidates)
        if method == "semantic":
            ranked = semantic_rank(nearest, k=k, lexical=space.lexical)
        elif space.keys is None:
            ranked = hybrid_rank(
                typed,
                semantic=nearest,
                lexical=space.lexical,
                k=k,
                params=params,
                similarity=lambda ids: space.index.similarities(vector, ids),
                vectors=space.index.vectors,
            )
        else:
            ranked = _keyed_hybrid_rank(space, space.keys, typed, vector, nearest, k=k, params=params)
    return [space.suggestion(pk, score) for pk, score in ranked if pk in space.position]


def _keyed_hybrid_rank(
    space: SearchSpace,
    keys: KeyIndex,
    typed: TypedQuery,
    vector: np.ndarray,
    nearest: list[tuple[int, float]],
    *,
    k: int,
    params: RankingParams,
) -> list[tuple[int, float]]:
    """The served ranking with each pair scored by its best of question and keys, on either signal."""
    best = keys.best_cosines(vector)
    return hybrid_rank(
        typed,
        semantic=keys.merge_nearest(nearest, best, limit=params.semantic_candidates),
        lexical=space.lexical,
        k=k,
        params=params,
        similarity=lambda ids: keys.raise_similarities(ids, space.index.similarities(vector, ids), best),
        vectors=space.index.vectors,
        lexical_scores=keys.raise_lexical(space.lexical.scores_all(typed), typed),
    )


def encode_queries(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Query vectors for many texts, equal to what `embed_query` gives one by one."""
    if getattr(encoder, "batch_invariant", True):
        return encoder.encode(list(texts), batch_size=256)
    return np.stack([encoder.encode([text])[0] for text in texts]) if texts else encoder.encode([])


def embed_query(encoder: Encoder, query: str) -> np.ndarray:
    """One query's vector, from the query-embedding cache when someone typed it before.

    Backspacing and many visitors typing the same opening words make prefixes repeat; the cache
    is Django's cache API (in-process by default, Redis or memcached when configured), so
    replicas can share it. Runs of whitespace are collapsed and the ends stripped first: the
    encoders' WordPiece tokenizer only splits on whitespace, so "how do i " embeds exactly as
    "how do i", and every space typed is then a cache hit.
    """
    query = " ".join(query.split())
    alias = app_settings().query_cache
    vector: np.ndarray
    if not alias:
        vector = encoder.encode([query])[0]
        return vector
    cache = caches[alias]
    digest = hashlib.blake2b(query.encode(), digest_size=16).hexdigest()
    key = f"qv:{encoder.spec.key}:{encoder.vector_space}:{digest}"
    cached = cache.get(key)
    if cached is not None:
        return np.frombuffer(cached, dtype=np.float32)
    vector = encoder.encode([query])[0]
    cache.set(key, vector.tobytes())
    return vector


# --- live corpora ----------------------------------------------------------------------------

# Loaded search spaces by build id, the most recently loaded last: a process serves a handful.
_spaces: OrderedDict[int, SearchSpace] = OrderedDict()
_spaces_lock = threading.Lock()
# The same spaces with their corpus's keys, by build id: (keys version, space).
_keyed: dict[int, tuple[str, SearchSpace]] = {}
MAX_CACHED_SPACES = 8
# Builds whose file could not be loaded: the file's identity then, and the visitor's message. A
# request for a broken corpus is answered from here, not by reading the file again, until the
# file changes (restored from a backup) or a re-index makes another build live.
_failed: dict[int, tuple[tuple[int, int, int] | None, str]] = {}


def _index_unavailable(reason: str) -> IndexUnavailableError:
    return IndexUnavailableError(
        f"The index of this corpus cannot be loaded: {reason}. An administrator can repair it by re-indexing "
        "the corpus.",
        reason=reason,
    )


def forget_loaded() -> None:
    """Drop this process's loaded search spaces and catalog: the next request reads them afresh."""
    with _spaces_lock:
        _spaces.clear()
        _keyed.clear()
        _failed.clear()
    invalidate_catalog()


def loaded_spaces() -> dict[int, SearchSpace]:
    """The search spaces this process holds in memory, by build id, least recently loaded first."""
    return dict(_spaces)


def live_space(build: LiveBuild) -> SearchSpace:
    """The loaded search space of a live build with its corpus's keys; IndexUnavailableError if it cannot be."""
    base = _live_base_space(build)
    if not build.keys_version:
        return base
    keyed = _keyed.get(build.id)
    if keyed is not None and keyed[0] == build.keys_version and keyed[1].index is base.index:
        return keyed[1]
    with _spaces_lock:
        keyed = _keyed.get(build.id)
        if keyed is None or keyed[0] != build.keys_version or keyed[1].index is not base.index:
            keyed = (build.keys_version, _with_keys(base, build))
            _keyed[build.id] = keyed
    return keyed[1]


def _with_keys(base: SearchSpace, build: LiveBuild) -> SearchSpace:
    """`base` ranking with the corpus's keys, embedded once here by the build's encoder."""
    try:
        rows = live_key_rows(build.corpus_id)
        encoder = encoder_registry().get(build.encoder)
    except (DatabaseError, EncoderError) as exc:
        # Keys improve answers; without them the corpus still answers as it did before it had any.
        logger.warning("The keys of corpus #%d cannot be loaded (%s): ranking without them.", build.corpus_id, exc)
        return base
    if not rows:
        return base
    return base.with_keys(key_index(rows, embed=lambda texts: encode_queries(encoder, texts), lexical=base.lexical))


def _live_base_space(build: LiveBuild) -> SearchSpace:
    space = _spaces.get(build.id)
    if space is not None:
        return space
    with _spaces_lock:
        space = _spaces.get(build.id)
        if space is None:
            space = _load_space(build)
            _spaces[build.id] = space
            while len(_spaces) > MAX_CACHED_SPACES:
                evicted, _ = _spaces.popitem(last=False)
                _keyed.pop(evicted, None)
    return space


def load_failure(build: LiveBuild | IndexBuild) -> str | None:
    """Why this process could not load the build's file, while that file is unchanged; else None."""
    failed = _failed.get(build.id)
    if failed is None or failed[0] != _file_identity(build):
        return None
    return failed[1]


def _file_identity(build: LiveBuild | IndexBuild) -> tuple[int, int, int] | None:
    try:
        stat = (app_settings().index_dir / build.file_name).stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _load_space(build: LiveBuild) -> SearchSpace:
    known = load_failure(build)
    if known is not None:
        raise _index_unavailable(known)
    identity = _file_identity(build)
    try:
        index = load_live_index(build)
    except (IndexFileError, IndexMismatchError) as exc:
        # The log gets the file's path; the visitor gets what is wrong and who can fix it.
        logger.error("The %s index of corpus #%d cannot be loaded: %s", build.encoder, build.corpus_id, exc)
        reason = exc.reason if isinstance(exc, IndexFileError) else "the index file belongs to another encoder"
        _failed[build.id] = (identity, reason)
        raise _index_unavailable(reason) from exc
    _failed.pop(build.id, None)
    rows = (
        QAPair.objects.filter(corpus_id=build.corpus_id).order_by("id").values_list("id", "question", "answer", "url")
    )
    return SearchSpace(
        index,
        rows.iterator(chunk_size=2000),
        lexical=lambda ids, questions: lexical_index_for(build.file_name, ids, questions),
    )


@_database_errors_as_unavailable
def corpus_list() -> list[CorpusEntry]:
    """Every public corpus, by name, as the page's selectors offer them."""
    return list(catalog().public.values())


@_database_errors_as_unavailable
def resolve_corpus(slug: str | None, *, public_only: bool = False) -> CorpusEntry:
    """The corpus a request names, or the one to serve when it names none.

    `public_only` (the search page and its partial) leaves private corpora out and refuses them by name.
    """
    current = catalog()
    corpora = current.public if public_only else current.corpora
    if public_only and slug and slug in current.corpora and slug not in corpora:
        raise CorpusPrivateError(f"Corpus '{slug}' is private: query it through /api/suggest with an API key.")
    if slug:
        entry = corpora.get(slug)
        if entry is None:
            raise CorpusNotFoundError(f"Unknown corpus '{slug}'.")
        return entry
    default = app_settings().default_corpus
    if default and default in corpora:
        return corpora[default]
    if len(corpora) == 1:
        return next(iter(corpora.values()))
    if not corpora:
        raise CorpusNotFoundError("No corpus exists yet: load one with `manage.py ingest`.")
    raise SearchError(f"Name a corpus: one of {', '.join(sorted(corpora))}.")


def resolve_encoder(entry: CorpusEntry, key: str | None) -> tuple[str, bool]:
    """The encoder key that answers, and whether it is a fallback from the corpus default."""
    if key:
        if key not in entry.live:
            indexed = ", ".join(sorted(entry.live)) or "none yet"
            raise EncoderNotIndexedError(
                f"Corpus '{entry.slug}' has no index for encoder '{key}' (indexed: {indexed})."
            )
        return key, False
    serving = entry.serving_encoder(app_settings().fallback_encoder)
    if serving is None:
        raise IndexUnavailableError(f"Corpus '{entry.slug}' has no index yet: run `manage.py ingest` or reindex it.")
    return serving, serving != entry.default_encoder


@_database_errors_as_unavailable
def suggestions_for(query: str, *, corpus: str | None = None, k: int = 5, encoder: str | None = None) -> SuggestResult:
    """Suggestions for what the visitor has typed so far."""
    started = time.perf_counter()
    entry = resolve_corpus(corpus)
    key, is_fallback = resolve_encoder(entry, encoder)
    spec, model = _serving_encoder(entry, key, load=bool(query.strip()))
    suggestions: list[Suggestion] = []
    if model is not None:
        space = live_space(entry.live[key])
        suggestions = rank(space, query, embed=lambda text: embed_query(model, text), k=k)
    took_ms = (time.perf_counter() - started) * 1000
    return SuggestResult(query, entry, spec, suggestions, round(took_ms, 2), is_fallback)


def _serving_encoder(entry: CorpusEntry, key: str, *, load: bool) -> tuple[EncoderSpec, Encoder | None]:
    """The encoder's spec, and the loaded encoder when `load`; a 503 without server paths when it cannot be."""
    registry = encoder_registry()
    try:
        return registry.spec(key), registry.get(key) if load else None
    except EncoderError as exc:
        # The message names model directories: the log keeps it, the visitor gets what is wrong.
        logger.error("Encoder %s cannot serve corpus %s: %s", key, entry.slug, exc)
        raise IndexUnavailableError(
            f"The encoder '{key}' cannot be loaded on this server, so this corpus cannot answer right now; "
            "an administrator can see why in the server log."
        ) from exc
