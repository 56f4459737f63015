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
from dataclasses import dataclass, replace
from typing import NamedTuple, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt
from django.core.cache import caches
from django.db import DatabaseError

from embeddings.encoders import Encoder, EncoderError, EncoderSpec
from embeddings.keys import KeyIndex
from embeddings.lexical import LexicalIndex
from embeddings.ranking import DEFAULT as DEFAULT_RANKING
from embeddings.ranking import RankingParams, embedding_text, hybrid_rank, semantic_rank
from embeddings.synonyms import NO_SYNONYMS, SynonymMap
from embeddings.typed_query import TypedQuery
from embeddings.vector_index import IndexFileError, IndexMismatchError, VectorIndex, VectorSubset

from .builds import load_live_index, remove_cached_copies
from .catalog import CorpusEntry, LiveBuild, catalog, invalidate_catalog
from .conf import app_settings
from .controls import CompiledRule, pair_tags
from .encoder_registry import encoder_registry
from .index_storage import in_place_path, index_storage, is_local
from .keys import key_index, live_key_rows
from .lexical_store import lexical_index_for
from .models import IndexBuild, QAPair
from .query_encoders import forget_loaded_query_encoders, query_encoder_for

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
    pinned: bool = False  # placed by a rule of the corpus's owner, not by the ranking


@dataclass(frozen=True)
class SuggestResult:
    query: str
    corpus: CorpusEntry
    encoder: EncoderSpec
    suggestions: list[Suggestion]
    took_ms: float
    is_fallback: bool  # answered by another encoder than the corpus's default


@dataclass(frozen=True)
class PairFilter:
    """The pairs a tag filter keeps, ready for both sides of the ranking."""

    mask: npt.NDArray[np.bool_]  # per row of the space (the lexical index's order)
    ids: frozenset[int]
    vectors: VectorSubset

    def __len__(self) -> int:
        return len(self.ids)


class SearchSpace:
    """A vector index and a lexical index over the same pairs, with their texts, ready to rank."""

    def __init__(
        self,
        index: VectorIndex,
        rows: Iterable[tuple[int, str, str, str]],
        *,
        lexical: Callable[[list[int], list[str]], LexicalIndex] = LexicalIndex,
        tags: Sequence[str] = (),
        synonyms: SynonymMap = NO_SYNONYMS,
    ) -> None:
        """`tags` holds each row's tags as stored ("a|b"), in row order; none: no pair has tags."""
        self.index = index
        self.synonyms = synonyms
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
        rows_of: dict[str, list[int]] = {}
        for row, stored in enumerate(tags):
            for tag in pair_tags(stored):
                rows_of.setdefault(tag, []).append(row)
        self.tag_rows = {tag: np.asarray(found, dtype=np.int64) for tag, found in rows_of.items()}
        self._filters: OrderedDict[tuple[str, ...], PairFilter] = OrderedDict()
        self._filters_lock = threading.Lock()
        # Visitors' and imported wordings of the pairs, ranked beside the questions (autocomplete/keys.py).
        self.keys: KeyIndex | None = None

    def with_keys(self, keys: KeyIndex | None) -> SearchSpace:
        """The same space (indexes shared, not copied) ranking with `keys` too."""
        keyed = copy.copy(self)
        keyed.keys = keys if keys is not None and len(keys) else None
        return keyed

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tags(self) -> list[str]:
        """Every tag of the pairs, sorted."""
        return sorted(self.tag_rows)

    def pair_filter(self, tags: Sequence[str]) -> PairFilter:
        """The pairs with any of the (normalised) `tags`, prepared on first use and kept for the next.

        Kept while the filters' members add up to no more than the space's pairs, the oldest dropped
        first: a small subset is searched in a copy of its vectors, so this bounds their memory.
        """
        key = tuple(sorted(set(tags)))
        found = self._filters.get(key)
        if found is not None:
            return found
        known = [self.tag_rows[tag] for tag in key if tag in self.tag_rows]
        rows = np.unique(np.concatenate(known)) if known else np.zeros(0, dtype=np.int64)
        mask = np.zeros(len(self.ids), dtype=np.bool_)
        mask[rows] = True
        ids = np.asarray(self.ids, dtype=np.int64)[rows]
        built = PairFilter(mask=mask, ids=frozenset(ids.tolist()), vectors=self.index.subset(ids))
        with self._filters_lock:
            self._filters[key] = built
            while sum(map(len, self._filters.values())) > max(len(self), 1) and len(self._filters) > 1:
                self._filters.popitem(last=False)
        return built

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
    only: PairFilter | None = None,
) -> list[Suggestion]:
    """The top-k suggestions for what has been typed, best first, no question text twice.

    `hybrid` is what is served; `semantic` (plain cosine) and `lexical` (keywords alone) exist as
    the evaluation's baselines. With `only`, every suggestion is one of its pairs.
    """
    if only is not None and not len(only):
        return []
    typed = TypedQuery.parse(query)
    subset = None if only is None else only.vectors
    if method == "lexical":
        scores = space.lexical.scores_all(typed)
        if only is not None:
            scores *= only.mask
        ranked = [(pk, score) for pk, score in space.lexical.top(scores, limit=k * 4) if score > 0]
        ranked = semantic_rank(ranked, k=k, lexical=space.lexical)
    else:
        # The baseline embeds what was typed; the served ranking may complete the last word first.
        vector = embed(query if method == "semantic" else embedding_text(typed, space.lexical, params))
        nearest = space.index.search(vector, params.semantic_candidates, subset=subset)
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
                allowed=None if only is None else only.mask,
            )
        else:
            ranked = _keyed_hybrid_rank(space, space.keys, typed, vector, nearest, k=k, params=params, only=only)
    return [space.suggestion(pk, score) for pk, score in ranked if pk in space.position]


def apply_rules(
    space: SearchSpace,
    ranked: list[Suggestion],
    rules: Sequence[CompiledRule],
    *,
    k: int,
    only: PairFilter | None = None,
) -> list[Suggestion]:
    """`ranked` with the firing rules' hidden pairs taken out and pinned pairs put at their positions.

    A pinned pair that the tag filter leaves out, or that the corpus no longer holds, is not shown.
    """
    hidden = frozenset().union(*(rule.hides for rule in rules))
    pins: dict[int, int] = {}
    for rule in rules:
        for position, pk in rule.pins:
            if pk not in hidden and pk in space.position and (only is None or pk in only.ids):
                pins.setdefault(pk, position)
    scores = {s.id: s.score for s in ranked}
    out = [s for s in ranked if s.id not in hidden and s.id not in pins]
    for pk, position in sorted(pins.items(), key=lambda item: item[1]):
        pinned = replace(space.suggestion(pk, scores.get(pk, 0.0)), pinned=True)
        out.insert(min(position - 1, len(out)), pinned)
    return out[:k]


def _keyed_hybrid_rank(
    space: SearchSpace,
    keys: KeyIndex,
    typed: TypedQuery,
    vector: np.ndarray,
    nearest: list[tuple[int, float]],
    *,
    k: int,
    params: RankingParams,
    only: PairFilter | None = None,
) -> list[tuple[int, float]]:
    """The served ranking with each pair scored by its best of question and keys, on either signal.

    With `only`, a pair that a key brings in is kept only when the filter keeps it too.
    """
    best = keys.best_cosines(vector)
    semantic = keys.merge_nearest(nearest, best, limit=params.semantic_candidates)
    if only is not None:
        semantic = [(pk, cosine) for pk, cosine in semantic if pk in only.ids]
    return hybrid_rank(
        typed,
        semantic=semantic,
        lexical=space.lexical,
        k=k,
        params=params,
        similarity=lambda ids: keys.raise_similarities(ids, space.index.similarities(vector, ids), best),
        vectors=space.index.vectors,
        lexical_scores=keys.raise_lexical(space.lexical.scores_all(typed), typed),
        allowed=None if only is None else only.mask,
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
_failed: dict[int, tuple[tuple[int, ...] | None, str]] = {}
# The build last loaded for each (corpus, encoder): answers in the meantime if its successor cannot load.
_last_loaded: dict[tuple[int, str], int] = {}


def _index_unavailable(reason: str) -> IndexUnavailableError:
    return IndexUnavailableError(
        f"The index of this corpus cannot be loaded: {reason}. An administrator can repair it by re-indexing "
        "the corpus.",
        reason=reason,
    )


def forget_loaded() -> None:
    """Drop this process's loaded search spaces, query encoders and catalog: the next request reads them afresh."""
    with _spaces_lock:
        _spaces.clear()
        _keyed.clear()
        _failed.clear()
        _last_loaded.clear()
    forget_loaded_query_encoders()
    invalidate_catalog()


def loaded_spaces() -> dict[int, SearchSpace]:
    """The search spaces this process holds in memory, by build id, least recently loaded first."""
    return dict(_spaces)


def live_space(build: LiveBuild, *, synonyms: SynonymMap = NO_SYNONYMS) -> SearchSpace:
    """The loaded search space of a live build with its corpus's keys; IndexUnavailableError if it cannot be.

    A space loaded with other synonyms than the corpus has now is loaded again: synonyms are part
    of its lexical index.
    """
    base = _live_base_space(build, synonyms)
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


def _live_base_space(build: LiveBuild, synonyms: SynonymMap) -> SearchSpace:
    space = _spaces.get(build.id)
    if space is not None and space.synonyms == synonyms:
        return space
    with _spaces_lock:
        space = _spaces.get(build.id)
        if space is None or space.synonyms != synonyms:
            space = _load_space(build, synonyms)
            _spaces[build.id] = space
            _last_loaded[(build.corpus_id, build.encoder)] = build.id
            while len(_spaces) > MAX_CACHED_SPACES:
                evicted, _ = _spaces.popitem(last=False)
                _keyed.pop(evicted, None)
    return space


def serving_space(build: LiveBuild, *, synonyms: SynonymMap = NO_SYNONYMS) -> SearchSpace:
    """The live build's search space; while it cannot be loaded, the one this process served before it.

    A re-index swaps in without failing a request even when its file cannot be brought here yet
    (the index storage briefly unreachable); a corpus never loaded here still answers 503.
    """
    try:
        return live_space(build, synonyms=synonyms)
    except IndexUnavailableError:
        previous = _spaces.get(_last_loaded.get((build.corpus_id, build.encoder), build.id))
        if previous is None:
            raise
        logger.warning("Build #%d cannot be loaded yet: its predecessor keeps answering.", build.id)
        return previous


def load_failure(build: LiveBuild | IndexBuild) -> str | None:
    """Why this process could not load the build's file, while that file is unchanged; else None."""
    failed = _failed.get(build.id)
    if failed is None or failed[0] != _file_identity(build):
        return None
    return failed[1]


def _file_identity(build: LiveBuild | IndexBuild) -> tuple[int, ...] | None:
    path = in_place_path(build.file_name)
    try:
        if path is None:
            # Kept in a storage elsewhere: its size and time there, so a replaced file is fetched again.
            storage = index_storage()
            modified = storage.get_modified_time(build.file_name)
            return (storage.size(build.file_name), int(modified.timestamp() * 1e9))
        stat = path.stat()
    except Exception:  # noqa: BLE001 - a storage backend raises its own errors: no identity, as for a missing file
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _load_space(build: LiveBuild, synonyms: SynonymMap) -> SearchSpace:
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
    if not is_local():
        remove_cached_copies()  # a swap is when copies of builds gone since are dropped
    rows = list(
        QAPair.objects.filter(corpus_id=build.corpus_id)
        .order_by("id")
        .values_list("id", "question", "answer", "url", "tags")
        .iterator(chunk_size=2000)
    )
    tags = [row[4] for row in rows]
    return SearchSpace(
        index,
        (row[:4] for row in rows),
        lexical=lambda ids, questions: lexical_index_for(build.file_name, ids, questions, synonyms=synonyms),
        tags=tags if any(tags) else (),
        synonyms=synonyms,
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


def corpus_tags(entry: CorpusEntry) -> list[str]:
    """The tags of a corpus's pairs, from its loaded search space (none while it cannot be served)."""
    serving = entry.serving_encoder(app_settings().fallback_encoder)
    if serving is None:
        return []
    try:
        return live_space(entry.live[serving], synonyms=entry.controls.synonyms).tags
    except (SearchError, DatabaseError):
        # The page still offers the box; a request then says what is wrong.
        return []


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
def suggestions_for(
    query: str,
    *,
    corpus: str | None = None,
    k: int = 5,
    encoder: str | None = None,
    tags: Sequence[str] | None = None,
) -> SuggestResult:
    """Suggestions for what the visitor has typed so far; with `tags` (normalised), only pairs with any of them."""
    started = time.perf_counter()
    entry = resolve_corpus(corpus)
    key, is_fallback = resolve_encoder(entry, encoder)
    spec, model = _serving_encoder(entry, key, load=bool(query.strip()))
    suggestions: list[Suggestion] = []
    if model is not None:
        space = serving_space(entry.live[key], synonyms=entry.controls.synonyms)
        only = space.pair_filter(tags) if tags is not None else None
        rules = entry.controls.rules_for(query)
        # Room for the hidden pairs, so that hiding one still leaves k suggestions.
        room = k + sum(len(rule.hides) for rule in rules)
        queries = query_encoder_for(entry, key, model)
        suggestions = rank(space, query, embed=lambda text: embed_query(queries, text), k=room, only=only)
        if rules:
            suggestions = apply_rules(space, suggestions, rules, k=k, only=only)
        suggestions = suggestions[:k]
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


class ServedCorpus(NamedTuple):
    """What answers a corpus's visitors now: its encoder and search space, and what embeds their queries."""

    key: str
    encoder: Encoder  # the corpus encoder, whose vectors the space holds
    space: SearchSpace
    queries: Encoder  # its query encoder where one is live and current, else `encoder`


def served_space(slug: str, encoder: str | None = None) -> ServedCorpus:
    """The encoder, search space and query encoder that answer a corpus's visitors now.

    For work that must see what is served (the reachability audit, the nearest question of a
    content gap); raises SearchError when the corpus cannot answer.
    """
    entry = resolve_corpus(slug)
    key, _ = resolve_encoder(entry, encoder)
    _, model = _serving_encoder(entry, key, load=True)
    assert model is not None  # load=True returns the encoder or raises
    space = live_space(entry.live[key], synonyms=entry.controls.synonyms)  # the space its visitors use
    return ServedCorpus(key, model, space, query_encoder_for(entry, key, model))
