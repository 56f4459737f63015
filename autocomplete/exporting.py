"""Export a corpus as CSV that a spreadsheet opens safely and that imports back unchanged, and its controls as JSON.

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return could run as a formula in
Excel or LibreOffice (CSV injection); such cells get a leading apostrophe, which spreadsheets show
as text and strip on display. A cell already starting with an apostrophe gets one more, so that
the import (parsing.py, through restore_cell) can take exactly one off and get every cell back.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.dateparse import parse_datetime

from .models import Corpus, QAPair, Rule, RuleAnswer, Synonym, normalise_question

EXPORT_COLUMNS = ("id", "question", "answer", "url", "tags", "featured")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ESCAPED_STARTS = (*_FORMULA_STARTS, "'")


def neutralise_cell(value: str) -> str:
    """The cell as text a spreadsheet will never evaluate."""
    return "'" + value if value.startswith(_ESCAPED_STARTS) else value


def restore_cell(value: str) -> str:
    """The cell as it was before neutralise_cell: its exact inverse on every cell it writes.

    Only an apostrophe that neutralise_cell could have added is taken off, so a cell of another
    file such as "'90s music" keeps its apostrophe.
    """
    return value[1:] if value.startswith("'") and value[1:].startswith(_ESCAPED_STARTS) else value


class _Echo:
    def write(self, value: str) -> str:
        return value


def corpus_csv_rows(corpus: Corpus) -> Iterator[str]:
    """The corpus as CSV lines (header first), streamed so large corpora need little memory."""
    writer = csv.writer(_Echo())
    yield writer.writerow(EXPORT_COLUMNS)
    pairs: Iterable[tuple[str, str, str, str, str, bool]] = (
        QAPair.objects.filter(corpus=corpus)
        .order_by("id")
        .values_list("external_id", "question", "answer", "url", "tags", "is_featured")
        .iterator(chunk_size=2000)
    )
    for *texts, featured in pairs:
        yield writer.writerow([*(neutralise_cell(str(value)) for value in texts), "1" if featured else ""])


# Bump when the controls export's fields change.
CONTROLS_FORMAT = 1


def corpus_controls(corpus: Corpus) -> dict[str, Any]:
    """The corpus's synonyms and rules as JSON-ready data; a rule's pairs named by id and question.

    The question names a pair in any copy of the corpus, where the database id would differ.
    """
    rules = []
    for rule in corpus.rules.order_by("id").prefetch_related("answers__pair"):
        rules.append(
            {
                "match": rule.match,
                "text": rule.text,
                "starts_at": rule.starts_at.isoformat() if rule.starts_at else None,
                "ends_at": rule.ends_at.isoformat() if rule.ends_at else None,
                "answers": [
                    {
                        "action": answer.action,
                        "position": answer.position,
                        "id": answer.pair.external_id,
                        "question": answer.pair.question,
                    }
                    for answer in _answers(rule)
                ],
            }
        )
    return {
        "format": CONTROLS_FORMAT,
        "corpus": corpus.slug,
        "synonyms": [
            {"terms": terms, "one_way_to": one_way_to}
            for terms, one_way_to in corpus.synonyms.order_by("id").values_list("terms", "one_way_to")
        ],
        "rules": rules,
    }


def _answers(rule: Rule) -> list[RuleAnswer]:
    return sorted(rule.answers.all(), key=lambda answer: (answer.action, answer.position, answer.pk))


class ControlsFileError(ValueError):
    """A controls JSON that cannot be imported; the message says what to fix."""


def import_controls(corpus: Corpus, data: bytes) -> tuple[int, int, list[str]]:
    """Add the synonyms and rules of a controls export to `corpus`: (synonyms, rules, questions not found).

    A rule's pairs are found by source id, else by question text; answers whose pair the corpus
    does not hold are left out and their questions returned. Nothing is written when the file is refused.
    """
    try:
        parsed = json.loads(data)
        if parsed.get("format") != CONTROLS_FORMAT:
            raise ControlsFileError(f"This is not a controls export of format {CONTROLS_FORMAT}: export it again.")
        synonyms = [(str(s["terms"]), str(s.get("one_way_to") or "")) for s in parsed["synonyms"]]
        rules = [
            (
                Rule(
                    corpus=corpus,
                    match=str(r["match"]),
                    text=str(r["text"]),
                    starts_at=parse_datetime(r["starts_at"]) if r.get("starts_at") else None,
                    ends_at=parse_datetime(r["ends_at"]) if r.get("ends_at") else None,
                ),
                [
                    (str(a["action"]), int(a["position"]), str(a.get("id") or ""), str(a["question"]))
                    for a in r["answers"]
                ],
            )
            for r in parsed["rules"]
        ]
    except ControlsFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise ControlsFileError(f"The controls file cannot be read ({exc}): import a file the export wrote.") from exc
    by_id = dict(corpus.pairs.exclude(external_id="").values_list("external_id", "pk"))
    by_question = dict(corpus.pairs.values_list("normalised_question", "pk"))
    missing: list[str] = []
    try:
        for rule, _ in rules:
            rule.full_clean(exclude=["corpus"])
    except ValidationError as exc:
        raise ControlsFileError(f"A rule in the file is not valid ({exc}): fix it in the file.") from exc
    with transaction.atomic():
        Synonym.objects.bulk_create(Synonym(corpus=corpus, terms=t, one_way_to=o) for t, o in synonyms)
        for rule, answers in rules:
            rule.save()
            for action, position, external_id, question in answers:
                pk = by_id.get(external_id) if external_id else None
                pk = pk or by_question.get(normalise_question(question))
                if pk is None:
                    missing.append(question)
                else:
                    RuleAnswer.objects.create(rule=rule, pair_id=pk, action=action, position=position)
    return len(synonyms), len(rules), missing
