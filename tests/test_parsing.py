"""Reading QA files: every format, header variants, encodings, per-row rejections, and hostile files
that must neither end the parse early nor take long."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from autocomplete.exporting import neutralise_cell, restore_cell
from autocomplete.parsing import Limits, ParseError, parse_qa_file

LIMITS = Limits(max_rows=100, max_question_length=50, max_answer_length=200)


def parse(text: str | bytes, filename: str = "f.csv", **kwargs: object):
    data = text.encode() if isinstance(text, str) else text
    return parse_qa_file(data, filename=filename, limits=LIMITS, **kwargs)  # type: ignore[arg-type]


def test_csv_with_all_fields_and_multiline_answers() -> None:
    parsed = parse(
        "id,question,answer,url,tags\r\n"
        'a1,How do I log in?,"Use the form.\nThen press Enter.",https://example.com/login,account|login\r\n'
        "a2,How do I log out?,Click your name,,\r\n"
    )
    assert parsed.format == "csv"
    assert [row.line for row in parsed.rows] == [2, 4]  # the quoted answer spans lines 2-3
    first = parsed.rows[0]
    assert (first.external_id, first.url, first.tags) == ("a1", "https://example.com/login", "account|login")
    assert first.answer == "Use the form.\nThen press Enter."


@pytest.mark.parametrize(
    ("header", "sep"),
    [("Question,Answer", ","), ("q;a", ";"), ("title\tbody", "\t"), ("QUESTION|ANSWER", "|")],
)
def test_header_aliases_and_sniffed_delimiters(header: str, sep: str) -> None:
    parsed = parse(f"{header}\nWhat is it?{sep}A thing\nWho made it?{sep}A team\n")
    assert [(r.question, r.answer) for r in parsed.rows] == [("What is it?", "A thing"), ("Who made it?", "A team")]


def test_tsv_by_extension() -> None:
    parsed = parse("question\tanswer\nA, B or C?\tC, mostly\n", filename="f.tsv")
    assert parsed.format == "tsv"
    assert parsed.rows[0].question == "A, B or C?"


def test_utf8_bom_is_accepted() -> None:
    parsed = parse("\ufeffquestion,answer\nCafé ouvert ?,Oui\n".encode())
    assert parsed.columns["question"] == "question"
    assert parsed.rows[0].question == "Café ouvert ?"


def test_json_array_reports_line_numbers() -> None:
    items = [
        {"question": "One?", "answer": "1"},
        {"question": "", "answer": "x"},
        "junk",
        {"q": "Two?", "a": "2", "tags": ["x", "y"], "id": 7},
    ]
    text = json.dumps(items, indent=2)
    parsed = parse(text, filename="f.json")
    assert parsed.format == "json"
    assert [(r.question, r.tags, r.external_id) for r in parsed.rows] == [("One?", "", ""), ("Two?", "x|y", "7")]
    lines = text.splitlines()
    rejected = {r.line: r.reason for r in parsed.rejected}
    assert set(rejected.values()) == {"question is empty", "not a JSON object"}
    for line, reason in rejected.items():
        expected = '"junk"' if reason == "not a JSON object" else "{"
        assert lines[line - 1].strip().startswith(expected)


def test_jsonl_with_a_broken_line() -> None:
    parsed = parse('{"question": "A?", "answer": "a"}\n\n{"question": "B?"\n[1]\n', filename="f.jsonl")
    assert [r.question for r in parsed.rows] == ["A?"]
    assert [(r.line, r.reason.split(" (")[0]) for r in parsed.rejected] == [
        (3, "invalid JSON"),
        (4, "not a JSON object"),
    ]


def test_format_detected_from_content_when_extension_is_unknown() -> None:
    assert parse('[{"question": "A?", "answer": "a"}]', filename="upload.bin").format == "json"
    assert parse('{"question": "A?", "answer": "a"}', filename="").format == "jsonl"


def test_rows_are_rejected_one_by_one_with_line_numbers() -> None:
    parsed = parse(
        "id,question,answer,url\n"
        "1,Good question?,Good answer,\n"
        "2,,No question,\n"
        "3,No answer?,,\n"
        f"4,{'x' * 51},Too long,\n"
        "5,good QUESTION,Duplicate by normalisation,\n"
        "1,Other question?,Duplicate id,\n"
        "7,Bad url?,Answer,javascript:alert(1)\n"
        "8,Answer too long?," + "y" * 201 + ",\n"
        "9,Fine?,Fine,https://ok.example\n"
    )
    assert [r.question for r in parsed.rows] == ["Good question?", "Fine?"]
    assert [(r.line, r.reason) for r in parsed.rejected] == [
        (3, "question is empty"),
        (4, "answer is empty"),
        (5, "question is longer than 50 characters"),
        (6, "duplicate question (same as line 2)"),
        (7, "duplicate id '1' (same as line 2)"),
        (8, "url is not a valid http(s) address"),
        (9, "answer is longer than 200 characters"),
    ]


def test_too_many_cells_is_a_row_error() -> None:
    parsed = parse("question,answer\nA?,a,extra\nB?,b\n")
    assert [(r.line, r.reason) for r in parsed.rejected] == [
        (2, "3 cells for 2 columns; quote cells that hold the delimiter")
    ]
    assert parsed.rejected[0].unreadable


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("question,answer\nA?,a\n".encode("utf-16"), "UTF-16"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"question,answer\nCaf\xe9?,x\n", "not valid UTF-8 .*line 2"),
        (b"   \n", "empty"),
        (b"name,email\nx,y\n", "No question and answer columns"),
        (b'[{"question": "A?", "answer": "a"', "Invalid JSON on line 1"),
        (b'{"question": "A?", "answer": "a"}', "one array"),
    ],
)
def test_whole_file_refusals(data: bytes, message: str) -> None:
    filename = "f.json" if data.startswith(b"{") else "f.csv"
    if data.startswith(b"["):
        filename = "f.json"
    with pytest.raises(ParseError, match=message):
        parse(data, filename=filename)


def test_row_limit() -> None:
    rows = "".join(f"Q{i}?,A\n" for i in range(101))
    with pytest.raises(ParseError, match="more than 100 rows"):
        parse("question,answer\n" + rows)


# Far below what these files cost before (minutes for the first line, a traceback for the JSON),
# and generous for a loaded two-core machine.
SECONDS = 10.0


def timed(call: Callable[[], Any]) -> Any:
    started = time.monotonic()
    try:
        return call()
    finally:
        assert time.monotonic() - started < SECONDS


@pytest.mark.parametrize("quoted", [False, True])
def test_a_field_over_the_csv_modules_limit_rejects_its_row_alone(quoted: bool) -> None:
    # 200,000 characters: over the csv module's default cap of 131,072, which used to end the parse.
    huge = '"' + "a long line\n" * 16_667 + '"' if quoted else "y" * 200_000
    text = "question,answer\nBefore?,fine\nHuge?," + huge + "\nAfter?,fine\nLast?,fine\n"
    parsed = parse(text)
    after = text.count("\n", 0, text.index("After?")) + 1  # the quoted answer spans many lines
    assert [(r.line, r.question) for r in parsed.rows] == [(2, "Before?"), (after, "After?"), (after + 1, "Last?")]
    assert [(r.line, r.reason, r.unreadable) for r in parsed.rejected] == [
        (3, "answer is longer than 200 characters", False)
    ]


def test_unreadable_rows_are_rejected_and_the_rows_after_them_still_read() -> None:
    parsed = parse(
        "question,answer\n"
        "One?,1\n"  # line 2
        '"Two"?,stray text after a closing quote\n'  # 3
        "Three?,3,unquoted, commas\n"  # 4
        "Four?,\n"  # 5: read, refused by validation
        "Five?,5\n"  # 6
    )
    assert [(r.line, r.question) for r in parsed.rows] == [(2, "One?"), (6, "Five?")]
    assert [(r.line, r.unreadable) for r in parsed.rejected] == [(3, True), (4, True), (5, False)]
    assert "a quote inside a quoted cell must be doubled" in parsed.rejected[0].reason
    assert parsed.unreadable_rows == 2


def test_a_quote_never_closed_is_an_unreadable_row_not_one_huge_answer() -> None:
    parsed = parse('question,answer\nOne?,1\nTwo?,"never closed\nThree?,3\nFour?,4\n')
    assert [r.question for r in parsed.rows] == ["One?"]
    assert [(r.line, r.unreadable) for r in parsed.rejected] == [(3, True)]
    assert "never closed, so the rest of the file could not be read" in parsed.rejected[0].reason


@pytest.mark.parametrize(
    "first_line",
    [
        '",' * 500_000,  # a megabyte of quotes and delimiters: csv.Sniffer took minutes on it
        "question,answer," + "\"';|\t," * 150_000,
        "x" * 1_000_000,
    ],
)
def test_a_pathological_first_line_is_refused_quickly(first_line: str) -> None:
    with pytest.raises(ParseError) as refused:
        timed(lambda: parse(first_line + "\nA?,a\n"))
    assert len(str(refused.value)) < 1000  # the error names a few columns, not a megabyte of them


def test_a_long_first_line_that_is_a_real_header_still_works() -> None:
    header = "question;answer;" + ";".join(f"extra{n}" for n in range(20_000))
    parsed = timed(lambda: parse(header + "\nA?;a\n"))
    assert [(r.question, r.answer) for r in parsed.rows] == [("A?", "a")]


@pytest.mark.parametrize("filename", ["deep.json", "deep.bin"])
def test_deeply_nested_json_is_refused_quickly(filename: str) -> None:
    with pytest.raises(ParseError, match="nested too deeply"):
        timed(lambda: parse("[" * 5000 + "]" * 5000, filename=filename))


def test_a_deeply_nested_jsonl_line_rejects_its_row_alone() -> None:
    text = '{"question": "A?", "answer": "a"}\n' + "[" * 5000 + "]" * 5000 + '\n{"question": "B?", "answer": "b"}\n'
    parsed = timed(lambda: parse(text, filename="f.jsonl"))
    assert [r.question for r in parsed.rows] == ["A?", "B?"]
    assert [(r.line, r.reason, r.unreadable) for r in parsed.rejected] == [(2, "JSON nested too deeply to read", True)]


def test_a_number_too_long_to_convert_is_a_parse_error() -> None:
    with pytest.raises(ParseError, match="Invalid JSON"):
        parse('[{"question": "A?", "answer": ' + "1" * 5000 + "}]", filename="f.json")


@pytest.mark.parametrize("filename", ["huge.csv", "huge.json", "huge.jsonl"])
def test_huge_fields_reject_their_row_quickly(filename: str) -> None:
    huge = "z" * 5_000_000
    pairs = [("Before?", "fine"), ("Huge?", huge), ("After?", "fine")]
    if filename.endswith(".csv"):
        text = "question,answer\n" + "".join(f"{q},{a}\n" for q, a in pairs)
    elif filename.endswith(".jsonl"):
        text = "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs)
    else:
        text = json.dumps([{"question": q, "answer": a} for q, a in pairs])
    parsed = timed(lambda: parse(text, filename=filename))
    assert [r.question for r in parsed.rows] == ["Before?", "After?"]
    assert [r.reason for r in parsed.rejected] == ["answer is longer than 200 characters"]


@pytest.mark.parametrize(
    "value", ["=SUM(1)", "+1", "-1", "@x", "'quoted", "''twice", "\tTab", "\rCR", "plain text", "'", ""]
)
def test_restore_cell_undoes_neutralise_cell_exactly(value: str) -> None:
    assert restore_cell(neutralise_cell(value)) == value


def test_an_apostrophe_no_export_would_add_is_kept() -> None:
    parsed = parse("question,answer\n'90s music?,'Tis the season\n'=1+1?,'-5\n")
    assert [(r.question, r.answer) for r in parsed.rows] == [("'90s music?", "'Tis the season"), ("=1+1?", "-5")]


def test_a_featured_column_says_yes_or_no_and_its_absence_says_nothing() -> None:
    records = [
        {"question": "A?", "answer": "a", "featured": True},
        {"question": "B?", "answer": "b", "featured": "Yes"},
        {"question": "C?", "answer": "c", "featured": "0"},
        {"question": "D?", "answer": "d"},
    ]
    parsed = parse_qa_file(json.dumps(records).encode(), filename="f.json")
    assert [row.featured for row in parsed.rows] == [True, True, False, None]
