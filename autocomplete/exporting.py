"""Export a corpus as CSV that a spreadsheet opens safely and that imports back unchanged.

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return could run as a formula in
Excel or LibreOffice (CSV injection); such cells get a leading apostrophe, which spreadsheets show
as text and strip on display. A cell already starting with an apostrophe gets one more, so that
the import (parsing.py, through restore_cell) can take exactly one off and get every cell back.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from .models import Corpus, QAPair

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
