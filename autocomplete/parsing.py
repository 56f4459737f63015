"""Read QA files (CSV, TSV, semicolon-separated, JSON array, JSONL) into validated rows.

Whole-file problems (not UTF-8, binary, no question column, JSON nested too deeply) raise ParseError
before anything is written; row problems reject that row alone, named by its line number, and every
other row is still read. A rejected row is either unreadable (the file may hold a pair there that
could not be read) or read and refused by validation (an empty answer): a replace must tell them apart.
"""

from __future__ import annotations

import csv
import functools
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

from .conf import app_settings
from .exporting import restore_cell
from .models import normalise_question

# Accepted header names for each field, compared case-insensitively.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "question": ("question", "q", "title", "query", "prompt"),
    "answer": ("answer", "a", "body", "response", "reply"),
    "external_id": ("id", "external_id", "key"),
    "url": ("url", "link", "href"),
    "tags": ("tags", "tag", "labels", "categories"),
    "featured": ("featured", "is_featured"),
}
# A featured cell that says yes; any other value says no. A file without the column changes nothing.
_YES = frozenset({"1", "true", "yes", "y", "x"})
FORMATS = ("csv", "tsv", "json", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_DELIMITERS = (",", ";", "\t", "|")


class ParseError(ValueError):
    """The file as a whole cannot be read; nothing is written."""


@dataclass(frozen=True)
class Row:
    line: int
    question: str
    answer: str
    external_id: str = ""
    url: str = ""
    tags: str = ""
    # None: the file does not say, so the pair keeps what the admin set.
    featured: bool | None = None

    @functools.cached_property
    def normalised_question(self) -> str:
        # Computed once per row: parsing, both plans of an ingest and its inserts all ask for it.
        return normalise_question(self.question)


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str
    # The row could not be read at all, as opposed to read and refused by validation.
    unreadable: bool = False


@dataclass
class ParsedFile:
    format: str
    columns: dict[str, str]  # our field -> the file's column name
    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)

    @property
    def unreadable_rows(self) -> int:
        """Rows that could not be read: the file may hold pairs there that nobody can see."""
        return sum(rejection.unreadable for rejection in self.rejected)


@dataclass(frozen=True)
class Limits:
    max_rows: int
    max_question_length: int
    max_answer_length: int

    @classmethod
    def from_settings(cls) -> Limits:
        conf = app_settings()
        return cls(
            max_rows=conf.max_rows,
            max_question_length=conf.max_question_length,
            max_answer_length=conf.max_answer_length,
        )


def decode_text(data: bytes) -> str:
    """UTF-8 (with or without BOM) or a clear refusal."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ParseError("The file is UTF-16; save it as UTF-8 (with or without BOM) and upload again.")
    if b"\x00" in data[:8192]:
        raise ParseError("The file looks binary (it holds NUL bytes); upload CSV, TSV, JSON or JSONL text.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ParseError(f"The file is not valid UTF-8 (first bad byte on line {line}); save it as UTF-8.") from exc


def detect_format(text: str, filename: str = "") -> str:
    """From the extension when it is known, else from the content."""
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    start = text.lstrip()[:1]
    if start == "[":
        return "json"
    if start == "{":
        return "jsonl"
    return "csv"


def parse_qa_file(
    data: bytes, *, filename: str = "", format: str | None = None, limits: Limits | None = None
) -> ParsedFile:
    """Parse and validate a QA file; see the module docstring for what is refused how."""
    limits = limits or Limits.from_settings()
    text = decode_text(data)
    if not text.strip():
        raise ParseError("The file is empty.")
    fmt = format or detect_format(text, filename)
    if fmt not in FORMATS:
        raise ParseError(f"Unknown format '{fmt}'; use one of {', '.join(FORMATS)}.")
    if fmt in ("json", "jsonl"):
        records = _json_records(text) if fmt == "json" else _jsonl_records(text)
        parsed = ParsedFile(format=fmt, columns={})
    else:
        header, records = _delimited_records(text, tab=fmt == "tsv")
        parsed = ParsedFile(format=fmt, columns=_map_columns(header))
        if "question" not in parsed.columns or "answer" not in parsed.columns:
            raise ParseError(
                f"No question and answer columns in the header ({_shown_header(header)}); "
                "name them question and answer (or q/title and a/body)."
            )
    _collect_rows(parsed, records, limits)
    return parsed


def _shown_header(header: list[str]) -> str:
    # A pathological first line can hold thousands of cells: an error names the first few.
    shown = ", ".join(name[:40] for name in header[:10])
    return shown + (f", … ({len(header)} columns)" if len(header) > 10 else "")


def _map_columns(header: list[str]) -> dict[str, str]:
    lowered = {name.strip().lower(): name for name in header}
    columns: dict[str, str] = {}
    for field_name, aliases in FIELD_ALIASES.items():
        for alias in aliases:
            if alias in lowered:
                columns[field_name] = lowered[alias]
                break
    return columns


Record = tuple[int, dict[str, Any] | None, str]  # line, fields (None if unreadable), problem


def _delimited_records(text: str, *, tab: bool) -> tuple[list[str], Iterator[Record]]:
    _allow_fields_up_to(len(text))
    delimiter = "\t" if tab else _header_delimiter(io.StringIO(text, newline="").readline())
    # strict: a quote that is never closed, or stray text after a closing quote, makes its row
    # unreadable instead of silently swallowing the rows after it into one cell.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise ParseError("The file has no readable header row.") from exc

    def records() -> Iterator[Record]:
        start = reader.line_num + 1
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # The reader starts afresh on the next line, so one bad row costs only itself.
                yield start, None, _csv_problem(exc, start, reader.line_num)
            else:
                if any(value.strip() for value in values):
                    if len(values) > len(header):
                        problem = f"{len(values)} cells for {len(header)} columns; quote cells that hold the delimiter"
                        yield start, None, problem
                    else:
                        yield start, dict(zip(header, values, strict=False)), ""
            start = reader.line_num + 1

    return header, records()


def _allow_fields_up_to(size: int) -> None:
    """Let the csv module read every field whole, however long, so its row is judged by validation.

    The module's cap (128 KiB by default) would end the parse at the first longer field. No field
    is longer than the text it comes from, and the cap only ever grows, so a parse in another
    thread is never cut short by this one.
    """
    if csv.field_size_limit() <= size:
        csv.field_size_limit(size + 1)


def _header_delimiter(first_line: str) -> str:
    """The delimiter that makes the header name a question and an answer column (else a comma).

    Splitting one line four ways takes time in proportion to its length, where csv.Sniffer's
    regular expressions take time in its square on a line of quotes and delimiters.
    """

    def fit(delimiter: str) -> tuple[int, int]:
        try:
            cells = next(csv.reader([first_line], delimiter=delimiter), [])
        except csv.Error:
            return (0, 0)
        mapped = _map_columns(cells)
        return ("question" in mapped) + ("answer" in mapped), len(mapped)

    best = max(_DELIMITERS, key=fit)  # max keeps the first of equals: the comma
    return best if fit(best) > (0, 0) else ","


def _csv_problem(error: csv.Error, start: int, end: int) -> str:
    message = str(error)
    if "unexpected end of data" in message:
        return "a quoted cell starting here is never closed, so the rest of the file could not be read"
    lines = f"lines {start}-{end}" if end > start else f"line {start}"
    if "expected after" in message:
        return f'unreadable CSV ({lines}): a quote inside a quoted cell must be doubled ("")'
    return f"unreadable CSV ({lines}): {message}"


def _json_records(text: str) -> Iterator[Record]:
    decoder = json.JSONDecoder()
    stripped = text.lstrip()
    position = len(text) - len(stripped)
    if not stripped.startswith("["):
        raise ParseError("A JSON file must hold one array of objects.")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"Invalid JSON on line {exc.lineno}: {exc.msg}.") from exc
    except RecursionError as exc:
        raise ParseError(_TOO_DEEP) from exc
    except ValueError as exc:  # only a number too long to convert gets here
        raise ParseError("Invalid JSON: a number in it is too long to read; write it as a string.") from exc
    position += 1
    line = text.count("\n", 0, position) + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            line += text[position] == "\n"
            position += 1
        if position >= len(text) or text[position] == "]":
            return
        value, end = decoder.raw_decode(text, position)
        yield (line, value, "") if isinstance(value, dict) else (line, None, "not a JSON object")
        line += text.count("\n", position, end)
        position = end


_TOO_DEEP = "The JSON is nested too deeply to read; a QA file holds an array of flat objects."


def _jsonl_records(text: str) -> Iterator[Record]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            yield number, None, f"invalid JSON ({str(exc)[:200]})"
            continue
        except RecursionError:
            yield number, None, "JSON nested too deeply to read"
            continue
        yield (number, value, "") if isinstance(value, dict) else (number, None, "not a JSON object")


def _field(record: dict[str, Any], columns: dict[str, str], name: str) -> Any:
    if columns:
        column = columns.get(name)
        return record.get(column) if column else None
    lowered = {str(key).strip().lower(): value for key, value in record.items()}
    for alias in FIELD_ALIASES[name]:
        if alias in lowered:
            return lowered[alias]
    return None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "|".join(str(item).strip() for item in value if str(item).strip())
    return str(value).strip()


_url_validator = URLValidator(schemes=["http", "https"])


def _row_problem(row: Row, limits: Limits) -> str:
    if not row.question:
        return "question is empty"
    if not row.answer:
        return "answer is empty"
    if len(row.question) > limits.max_question_length:
        return f"question is longer than {limits.max_question_length} characters"
    if len(row.answer) > limits.max_answer_length:
        return f"answer is longer than {limits.max_answer_length} characters"
    if row.url:
        try:
            _url_validator(row.url)
        except ValidationError:
            return "url is not a valid http(s) address"
    return ""


def _collect_rows(parsed: ParsedFile, records: Iterator[Record], limits: Limits) -> None:
    seen_questions: dict[str, int] = {}
    seen_ids: dict[str, int] = {}
    # Cells of a spreadsheet export carry the apostrophe exporting.py adds; it is taken off again.
    text_of = _spreadsheet_text if parsed.format in ("csv", "tsv") else _as_text
    for line, record, problem in records:
        if record is None:
            parsed.rejected.append(Rejection(line, problem, unreadable=True))
            continue
        if len(parsed.rows) >= limits.max_rows:
            raise ParseError(f"The file has more than {limits.max_rows} rows (AUTOCOMPLETE_MAX_ROWS).")
        row = Row(
            line=line,
            question=" ".join(text_of(_field(record, parsed.columns, "question")).split()),
            answer=text_of(_field(record, parsed.columns, "answer")),
            external_id=text_of(_field(record, parsed.columns, "external_id"))[:200],
            url=text_of(_field(record, parsed.columns, "url")),
            tags=text_of(_field(record, parsed.columns, "tags"))[:500],
            featured=_featured(_field(record, parsed.columns, "featured")),
        )
        problem = _row_problem(row, limits)
        if problem:
            parsed.rejected.append(Rejection(line, problem))
            continue
        key = row.normalised_question
        if key in seen_questions:
            problem = f"duplicate question (same as line {seen_questions[key]})"
        elif row.external_id and row.external_id in seen_ids:
            problem = f"duplicate id '{row.external_id}' (same as line {seen_ids[row.external_id]})"
        if problem:
            parsed.rejected.append(Rejection(line, problem))
            continue
        seen_questions[key] = line
        if row.external_id:
            seen_ids[row.external_id] = line
        parsed.rows.append(row)


def _featured(value: Any) -> bool | None:
    if value is None:
        return None
    return value is True or _as_text(value).strip().lower() in _YES


def _spreadsheet_text(value: Any) -> str:
    return restore_cell(_as_text(value))
