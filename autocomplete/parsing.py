"""Read QA files (CSV, TSV, semicolon-separated, JSON array, JSONL) into validated rows.

Whole-file problems (not UTF-8, binary, no question column) raise ParseError before anything is
written; row problems reject that row alone, named by its line number.
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
from .models import normalise_question

# Accepted header names for each field, compared case-insensitively.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "question": ("question", "q", "title", "query", "prompt"),
    "answer": ("answer", "a", "body", "response", "reply"),
    "external_id": ("id", "external_id", "key"),
    "url": ("url", "link", "href"),
    "tags": ("tags", "tag", "labels", "categories"),
}
FORMATS = ("csv", "tsv", "json", "jsonl")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


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

    @functools.cached_property
    def normalised_question(self) -> str:
        # Computed once per row: parsing, both plans of an ingest and its inserts all ask for it.
        return normalise_question(self.question)


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str


@dataclass
class ParsedFile:
    format: str
    columns: dict[str, str]  # our field -> the file's column name
    rows: list[Row] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


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
                f"No question and answer columns in the header ({', '.join(header)}); "
                "name them question and answer (or q/title and a/body)."
            )
    _collect_rows(parsed, records, limits)
    return parsed


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
    first_line = text.split("\n", 1)[0]
    if tab:
        delimiter = "\t"
    else:
        try:
            delimiter = csv.Sniffer().sniff(first_line, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [name.strip() for name in next(reader)]
    except (StopIteration, csv.Error) as exc:
        raise ParseError("The file has no readable header row.") from exc

    def records() -> Iterator[Record]:
        start = reader.line_num + 1
        try:
            for values in reader:
                if any(value.strip() for value in values):
                    if len(values) > len(header):
                        yield start, None, f"{len(values)} cells for {len(header)} columns"
                    else:
                        yield start, dict(zip(header, values, strict=False)), ""
                start = reader.line_num + 1
        except csv.Error as exc:
            yield start, None, f"unreadable CSV ({exc})"

    return header, records()


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


def _jsonl_records(text: str) -> Iterator[Record]:
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            yield number, None, f"invalid JSON ({exc})"
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
    for line, record, problem in records:
        if record is None:
            parsed.rejected.append(Rejection(line, problem))
            continue
        if len(parsed.rows) >= limits.max_rows:
            raise ParseError(f"The file has more than {limits.max_rows} rows (AUTOCOMPLETE_MAX_ROWS).")
        row = Row(
            line=line,
            question=" ".join(_as_text(_field(record, parsed.columns, "question")).split()),
            answer=_as_text(_field(record, parsed.columns, "answer")),
            external_id=_as_text(_field(record, parsed.columns, "external_id"))[:200],
            url=_as_text(_field(record, parsed.columns, "url")),
            tags=_as_text(_field(record, parsed.columns, "tags"))[:500],
        )
        problem = _row_problem(row, limits)
        key = row.normalised_question
        if not problem and key in seen_questions:
            problem = f"duplicate question (same as line {seen_questions[key]})"
        if not problem and row.external_id and row.external_id in seen_ids:
            problem = f"duplicate id '{row.external_id}' (same as line {seen_ids[row.external_id]})"
        if problem:
            parsed.rejected.append(Rejection(line, problem))
            continue
        seen_questions[key] = line
        if row.external_id:
            seen_ids[row.external_id] = line
        parsed.rows.append(row)
