"""What a visitor has typed, parsed once: its words and whether the last one is still being typed.

Also how any text becomes words (normalised, split into runs of letters and digits), so that
corpus texts and queries are read alike.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# Letters and digits only: underscores and punctuation separate words, as a reader would expect.
_TOKEN_RE = re.compile(r"[^\W_]+")
# The word a text ends with, as typed.
_LAST_WORD_RE = re.compile(_TOKEN_RE.pattern + "$")


def normalise_text(text: str) -> str:
    """Return `text` NFKC-normalised, case-folded and stripped of accents."""
    if text.isascii():
        # ASCII is its own NFKC form and has no accents, and casefold is lower: the fast path
        # that almost every keystroke takes.
        return text.lower()
    # NFKC first folds compatibility forms (ligatures, full-width letters), casefold handles ß and
    # friends, then NFD exposes accents as combining marks so they can be dropped.
    folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFD", folded)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def tokenize(text: str) -> list[str]:
    """Split normalised `text` into runs of letters and digits."""
    return _TOKEN_RE.findall(normalise_text(text))


@dataclass(frozen=True)
class TypedQuery:
    """A query as typed so far, read once for everything that ranks it."""

    text: str
    # Every word, normalised, in order.
    words: tuple[str, ...]
    # The text ends inside a word: the visitor may still be typing it.
    ends_inside_word: bool
    # Where the word the text ends with begins in `text`, as typed (None: it ends with no word).
    last_word_start: int | None
    # That word's normalised words: usually one, more when normalising splits it ("½" -> "1", "2").
    last_word: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> TypedQuery:
        normalised = normalise_text(text)
        last = _LAST_WORD_RE.search(text)
        return cls(
            text=text,
            words=tuple(_TOKEN_RE.findall(normalised)),
            ends_inside_word=bool(normalised) and _TOKEN_RE.fullmatch(normalised[-1]) is not None,
            last_word_start=None if last is None else last.start(),
            last_word=() if last is None else tuple(tokenize(last.group())),
        )

    @classmethod
    def of(cls, query: str | TypedQuery) -> TypedQuery:
        """`query` parsed, unless it already is."""
        return query if isinstance(query, TypedQuery) else cls.parse(query)

    @property
    def finished_words(self) -> tuple[str, ...]:
        """The words the visitor has finished typing."""
        return self.words[:-1] if self.ends_inside_word and self.words else self.words

    @property
    def unfinished_word(self) -> str | None:
        """The normalised word still being typed, if the text ends inside one."""
        return self.words[-1] if self.ends_inside_word and self.words else None

    @property
    def before_last_word(self) -> str:
        """The text up to the word it ends with (all of it when it ends with none)."""
        return self.text if self.last_word_start is None else self.text[: self.last_word_start]
