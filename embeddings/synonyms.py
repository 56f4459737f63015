"""Synonyms as the lexical index applies them: words added to the texts that hold a synonym.

Expanding the texts rather than the query keeps every keystroke as cheap as without synonyms, and
a half-typed word matches an added word as it matches any other ("wirel" finds a text that says
"wifi" once "wifi, wireless" is a group). Phrases work on both sides: a text holding the phrase
"wi fi" (consecutive words) gets the group's other words, and a query typed as "wi fi" matches a
text that said "wireless" because "wi" and "fi" were added to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .typed_query import tokenize

Phrase = tuple[str, ...]


@dataclass(frozen=True)
class SynonymMap:
    """Which phrase, found in a text, adds which words to it; equal maps compare equal (a cache key)."""

    adds: tuple[tuple[Phrase, frozenset[str]], ...] = ()
    _lookup: dict[Phrase, frozenset[str]] = field(default_factory=dict, compare=False, repr=False)
    _lengths: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(cls, entries: Iterable[tuple[Sequence[str], Sequence[str]]]) -> SynonymMap:
        """A map from (terms, one_way_to) entries: no targets makes the terms a two-way group.

        A one-way entry "laptop -> notebook" means a query for laptop also finds texts about
        notebooks, so it is the texts holding "notebook" that get "laptop".
        """
        adds: dict[Phrase, set[str]] = {}
        for terms, targets in entries:
            sources = [phrase for phrase in map(_phrase, terms) if phrase]
            if targets:
                for target in filter(None, map(_phrase, targets)):
                    adds.setdefault(target, set()).update(word for phrase in sources for word in phrase)
            else:
                for phrase in sources:
                    others = {word for other in sources if other != phrase for word in other}
                    adds.setdefault(phrase, set()).update(others - set(phrase))
        ordered = tuple(sorted((phrase, frozenset(words)) for phrase, words in adds.items() if words))
        return cls(ordered, dict(ordered), tuple(sorted({len(phrase) for phrase, _ in ordered})))

    def __bool__(self) -> bool:
        return bool(self.adds)

    def expand(self, words: Sequence[str]) -> list[str]:
        """`words` (a tokenized text) with the words its synonyms add, each added once."""
        if not self._lookup:
            return list(words)
        added: set[str] = set()
        for start in range(len(words)):
            for length in self._lengths:
                found = self._lookup.get(tuple(words[start : start + length]))
                if found is not None:
                    added |= found
        return [*words, *sorted(added.difference(words))]

    def digest_text(self) -> str:
        """A stable text form, for naming the lexical files built with this map."""
        return ";".join(f"{' '.join(phrase)}>{','.join(sorted(words))}" for phrase, words in self.adds)


NO_SYNONYMS = SynonymMap()


def _phrase(text: str) -> Phrase:
    return tuple(tokenize(text))
