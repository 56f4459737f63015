"""Which parts of a suggestion match what was typed, as character offsets into the suggestion's text.

Words are read as the lexical index reads them (typed_query.normalise_text: case, accents and
compatibility forms folded), so a highlighted word is one the keyword side could have matched:
a whole word typed and finished, or the beginning of the word still being typed. Offsets point
into the original text, never the normalised one, so they stay right around accents and
ligatures; they count Unicode code points, as Python strings do.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

from .typed_query import TypedQuery, normalise_text, tokenize

# As typed_query splits words: runs of letters and digits.
_WORD_RE = re.compile(r"[^\W_]+")

Span = tuple[int, int]


def match_spans(query: str | TypedQuery, text: str) -> list[Span]:
    """The (start, end) offsets of `text`'s words that match `query`, in order, end exclusive.

    A word matches when it equals a finished query word; when it begins with the unfinished last
    word, only that beginning is covered, so "upl" marks "Upl" in "Upload".
    """
    typed = query if isinstance(query, TypedQuery) else _parse(query)
    finished = frozenset(typed.finished_words)
    prefix = typed.unfinished_word
    if not finished and prefix is None:
        return []
    if text.isascii():
        # Almost every suggestion: words split and fold as the index reads them with a regex and
        # lower(), and a typed beginning covers as many characters as it has.
        spans: list[Span] = []
        for match in _WORD_RE.finditer(text):
            word = match.group().lower()
            if word in finished:
                spans.append(match.span())
            elif prefix is not None and word.startswith(prefix):
                spans.append((match.start(), match.start() + len(prefix)))
        return spans
    return _unicode_spans(text, finished, prefix)


# The box highlights k suggestions for one query: parse it once, not once per suggestion.
_parse = functools.lru_cache(maxsize=256)(TypedQuery.parse)


def _unicode_spans(text: str, finished: frozenset[str], prefix: str | None) -> list[Span]:
    spans: list[Span] = []
    for start, end in _raw_words(text):
        pieces = tokenize(text[start:end])
        if any(piece in finished for piece in pieces):
            spans.append((start, end))
        elif prefix is not None and any(piece.startswith(prefix) for piece in pieces):
            spans.append((start, _prefix_end(text, start, end, prefix) if len(pieces) == 1 else end))
    return spans


def _raw_words(text: str) -> Iterator[Span]:
    """Runs of letters and digits in `text` as written, each with the combining marks it carries.

    A decomposed "é" is "e" plus a combining mark, which is neither letter nor digit: counting the
    mark into its word keeps the word whole, as normalising reads it.
    """
    start: int | None = None
    for position, char in enumerate(text):
        if char.isalnum() or (start is not None and unicodedata.combining(char)):
            if start is None:
                start = position
        elif start is not None:
            yield start, position
            start = None
    if start is not None:
        yield start, len(text)


def _prefix_end(text: str, start: int, end: int, prefix: str) -> int:
    """Where the shortest beginning of text[start:end] that normalises to at least `prefix` ends."""
    for cut in range(start + 1, end + 1):
        # A base letter and the marks after it are one character to a reader: never cut between them.
        if cut < end and unicodedata.combining(text[cut]):
            continue
        if len(normalise_text(text[start:cut])) >= len(prefix):
            return cut
    return end
