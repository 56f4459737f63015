"""The owner's controls of a corpus: synonyms, rules that pin or hide answers, and tag filters.

They are read with the catalog (at most every `catalog_ttl_seconds`, at once after an admin change)
and compiled here into plain values, so that a keystroke applies them without touching the database.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from embeddings.synonyms import NO_SYNONYMS, SynonymMap
from embeddings.typed_query import tokenize

from .exporting import neutralise_cell, restore_cell
from .models import Rule, RuleAnswer, Synonym

SYNONYM_COLUMNS = ("terms", "one_way_to")
# Tags in a request: more would only slow the filter's first build.
MAX_TAGS = 20


class SynonymFileError(ValueError):
    """A synonyms CSV that cannot be read; the message says what to fix."""


def normalise_typed(text: str) -> str:
    """Typed text as rules compare it: the lexical side's words, one space apart."""
    return " ".join(tokenize(text))


def split_terms(text: str) -> list[str]:
    """A comma-separated list of words or phrases, blanks dropped."""
    return [term.strip() for term in text.split(",") if term.strip()]


def parse_tags(text: str) -> tuple[str, ...]:
    """A request's `tags=a,b` as the normalised tags, sorted, each once."""
    return tuple(sorted({tag for part in text.split(",") if (tag := normalise_tag(part))}))


def normalise_tag(tag: str) -> str:
    """A tag as filters compare it: case and surrounding spaces ignored."""
    return tag.strip().casefold()


def pair_tags(tags: str) -> list[str]:
    """The tags of a pair as stored ("a|b")."""
    return [tag for part in tags.split("|") if (tag := normalise_tag(part))]


@dataclass(frozen=True)
class CompiledRule:
    match: str
    text: str  # normalised as typed text is
    starts: float | None  # epoch seconds
    ends: float | None
    pins: tuple[tuple[int, int], ...]  # (position from 1, pair id), by position
    hides: frozenset[int]

    def fires(self, typed: str, now: float) -> bool:
        """Whether the rule is in force at `now` and matches the normalised `typed` text."""
        if (self.starts is not None and now < self.starts) or (self.ends is not None and now >= self.ends):
            return False
        if self.match == Rule.Match.EXACT:
            return typed == self.text
        if self.match == Rule.Match.PREFIX:
            return typed.startswith(self.text)
        return f" {self.text} " in f" {typed} "


@dataclass(frozen=True)
class CorpusControls:
    synonyms: SynonymMap = NO_SYNONYMS
    rules: tuple[CompiledRule, ...] = ()

    def rules_for(self, query: str, *, now: float | None = None) -> list[CompiledRule]:
        """The rules that fire for what has been typed."""
        if not self.rules:
            return []
        typed = normalise_typed(query)
        if not typed:
            return []
        moment = time.time() if now is None else now
        return [rule for rule in self.rules if rule.fires(typed, moment)]


NO_CONTROLS = CorpusControls()


def read_controls(corpus_id: int | None = None) -> dict[int, CorpusControls]:
    """Every corpus's controls (or one's), by corpus id, in two queries: with the catalog, never per keystroke."""
    scope = {} if corpus_id is None else {"corpus_id": corpus_id}
    synonyms: dict[int, list[tuple[list[str], list[str]]]] = {}
    for owner, terms, one_way_to in Synonym.objects.filter(**scope).values_list("corpus_id", "terms", "one_way_to"):
        synonyms.setdefault(owner, []).append((split_terms(terms), split_terms(one_way_to)))
    # One row per rule and answer (a rule without answers: one row of None), in a single join.
    found: dict[int, tuple[Rule, list[tuple[str, int, int]]]] = {}
    fields = ("id", "corpus_id", "match", "text", "starts_at", "ends_at")
    answers = ("answers__action", "answers__position", "answers__pair_id")
    for row in Rule.objects.filter(**scope).order_by("id").values_list(*fields, *answers):
        rule_id, owner, match, text, starts_at, ends_at, action, position, pair_id = row
        rule = Rule(id=rule_id, corpus_id=owner, match=match, text=text, starts_at=starts_at, ends_at=ends_at)
        effects = found.setdefault(rule_id, (rule, []))[1]
        if pair_id is not None:
            effects.append((action, position, pair_id))
    rules: dict[int, list[CompiledRule]] = {}
    for rule, effects in found.values():
        rules.setdefault(rule.corpus_id, []).append(
            CompiledRule(
                match=rule.match,
                text=normalise_typed(rule.text),
                starts=rule.starts_at.timestamp() if rule.starts_at else None,
                ends=rule.ends_at.timestamp() if rule.ends_at else None,
                pins=tuple(sorted((max(1, p), pk) for a, p, pk in effects if a == RuleAnswer.Action.PIN)),
                hides=frozenset(pk for a, _, pk in effects if a == RuleAnswer.Action.HIDE),
            )
        )
    return {
        corpus_id: CorpusControls(
            synonyms=SynonymMap.build(synonyms.get(corpus_id, [])), rules=tuple(rules.get(corpus_id, []))
        )
        for corpus_id in synonyms.keys() | rules.keys()
    }


def corpus_synonyms(corpus_id: int) -> SynonymMap:
    """One corpus's synonyms as its lexical index applies them."""
    return read_controls(corpus_id).get(corpus_id, NO_CONTROLS).synonyms


# --- synonyms as CSV -----------------------------------------------------------------------------


class _Echo:
    def write(self, value: str) -> str:
        return value


def synonym_csv_rows(entries: Iterable[tuple[str, str]]) -> Iterator[str]:
    """(terms, one_way_to) entries as CSV lines, header first, safe to open in a spreadsheet."""
    writer = csv.writer(_Echo())
    yield writer.writerow(SYNONYM_COLUMNS)
    for terms, one_way_to in entries:
        yield writer.writerow([neutralise_cell(terms), neutralise_cell(one_way_to)])


def parse_synonym_csv(data: bytes) -> list[tuple[str, str]]:
    """(terms, one_way_to) entries of a synonyms CSV: a `terms` column, optionally `one_way_to`.

    A row's terms are separated by commas inside the cell ("wifi, wi-fi, wireless").
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SynonymFileError("The synonyms file is not UTF-8: save it as UTF-8 CSV and upload it again.") from exc
    reader = csv.DictReader(io.StringIO(text))
    if "terms" not in (reader.fieldnames or []):
        raise SynonymFileError(
            "The synonyms file needs a header row with a 'terms' column (and optionally 'one_way_to'), "
            "as the synonyms export writes it."
        )
    entries: list[tuple[str, str]] = []
    for line, row in enumerate(reader, start=2):
        terms = ", ".join(split_terms(restore_cell(row.get("terms") or "")))
        one_way_to = ", ".join(split_terms(restore_cell(row.get("one_way_to") or "")))
        if not terms:
            continue
        if not one_way_to and len(split_terms(terms)) < 2:
            raise SynonymFileError(
                f"Line {line}: a two-way group needs at least two terms separated by commas, or a one_way_to."
            )
        if len(terms) > 500 or len(one_way_to) > 500:
            raise SynonymFileError(f"Line {line}: terms and one_way_to hold at most 500 characters each.")
        entries.append((terms, one_way_to))
    return entries


def synonym_map_from_csv(data: bytes) -> SynonymMap:
    """The SynonymMap of a synonyms CSV (SynonymFileError when it cannot be read)."""
    return SynonymMap.build((split_terms(terms), split_terms(one_way)) for terms, one_way in parse_synonym_csv(data))
