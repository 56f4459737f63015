"""manage.py evaluate on a small labelled corpus made here, with the real minilm encoder."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from autocomplete.measure.evaluation import cut
from embeddings.encoders import Encoder

CORPUS = [
    ("a1", "How do I reset my password?", "Use the link on the sign-in page."),
    ("a2", "Where can I download my invoices?", "Under Billing, one PDF per month."),
    ("a3", "How do I cancel my subscription?", "Billing, then Cancel plan."),
    ("a4", "Is there a mobile app?", "Yes, for iOS and Android."),
    ("a5", "What payment methods do you accept?", "Cards and bank transfer."),
    ("a6", "How do I delete my account?", "Settings, Account, Delete account."),
]
QUERIES = [
    ("how do i reset my password", "a1", "dev"),
    ("download my invoices", "a2", "dev"),
    ("cancel my subscription", "a3", "test"),
    ("cancel my subscription", "a6", "test"),  # two acceptable targets for one query
    ("is there a mobile app", "a4", "test"),
    ("which payment methods are accepted", "a5", "test"),
]
FIELDS = {"hit_at_k", "mrr", "mean_hit_at_k", "keystrokes_to_hit", "no_suggestion"}


def write_csv(path: Path, header: list[str], rows: Sequence[tuple[str, ...]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "corpus": write_csv(tmp_path / "corpus.csv", ["id", "question", "answer"], CORPUS),
        "queries": write_csv(tmp_path / "queries.csv", ["query", "target_id", "split"], QUERIES),
        "cache": tmp_path / "cache",
    }


def evaluate(files: dict[str, Path], *args: str) -> dict[str, Any]:
    out = StringIO()
    call_command(
        "evaluate",
        "--corpus-csv",
        str(files["corpus"]),
        "--queries-csv",
        str(files["queries"]),
        "--encoder",
        "minilm",
        "--cache-dir",
        str(files["cache"]),
        "--json",
        *args,
        stdout=out,
    )
    text = out.getvalue()
    assert text.count("\n") == 1, "--json prints exactly one line on stdout"
    report: dict[str, Any] = json.loads(text)
    return report


def test_every_field_is_reported_and_known_answers_are_found(files: dict[str, Path], minilm: Encoder) -> None:
    report = evaluate(files, "--baselines")
    assert {"encoder", "k", "n_queries", "n_corpus", "baselines"} | FIELDS <= set(report)
    assert (report["encoder"], report["k"], report["n_queries"], report["n_corpus"]) == ("minilm", 5, 5, 6)
    for result in (report, report["baselines"]["semantic"], report["baselines"]["lexical"]):
        assert set(result) >= FIELDS
        assert list(result["hit_at_k"]) == ["0.25", "0.5", "0.75", "1.0"]
        assert list(result["mrr"]) == ["0.25", "0.5", "0.75", "1.0"]
        assert 0.0 < result["keystrokes_to_hit"] <= 1.0
    # Six questions and k=5: whole queries that nearly repeat their target all find it, first.
    assert report["hit_at_k"]["1.0"] == 1.0
    assert report["mrr"]["1.0"] == 1.0
    assert report["no_suggestion"]["1.0"] == 0.0
    assert report["mean_hit_at_k"] == pytest.approx(sum(report["hit_at_k"].values()) / 4, abs=1e-4)


def test_split_filters_queries(files: dict[str, Path], minilm: Encoder) -> None:
    assert evaluate(files, "--split", "dev", "--fractions", "1.0")["n_queries"] == 2
    # "cancel my subscription" has two target rows and counts once.
    assert evaluate(files, "--split", "test", "--fractions", "1.0")["n_queries"] == 3


def test_distractors_join_the_corpus_but_never_count_as_hits(
    files: dict[str, Path], tmp_path: Path, minilm: Encoder
) -> None:
    # Each distractor repeats a query word for word, under the id of that query's target.
    first = write_csv(tmp_path / "d1.csv", ["id", "question", "answer"], [("a1", "how do i reset my password", "")])
    second = write_csv(tmp_path / "d2.csv", ["id", "question", "answer"], [("a2", "download my invoices", "")])
    third = write_csv(tmp_path / "d3.csv", ["id", "question", "answer"], [("x", "Is the sky blue?", "")])
    args = ["--split", "dev", "--k", "1", "--fractions", "1.0"]
    clean = evaluate(files, *args)
    padded = evaluate(files, *args, "--distractors-csv", str(first), str(second), "--distractors-csv", str(third))
    assert padded["n_corpus"] == clean["n_corpus"] + 3
    assert clean["hit_at_k"]["1.0"] == 1.0
    # The distractors now rank first: the targets are pushed out of the top 1.
    assert padded["hit_at_k"]["1.0"] == 0.0


def test_offtopic_queries_get_no_suggestion(files: dict[str, Path], tmp_path: Path, minilm: Encoder) -> None:
    offtopic = tmp_path / "offtopic.txt"
    offtopic.write_text("qwzx qwzx vbnr\n\nhjkl hjkl xkcd\nzzzzqx wvvt\n", encoding="utf-8")
    report = evaluate(files, "--offtopic", str(offtopic), "--fractions", "0.5,1.0")
    assert report["offtopic"]["n_queries"] == 3
    assert report["offtopic"]["no_suggestion"] == {"0.5": 1.0, "1.0": 1.0}
    assert report["no_suggestion"] == {"0.5": 0.0, "1.0": 0.0}


def test_latency_is_reported(files: dict[str, Path], minilm: Encoder) -> None:
    latency = evaluate(files, "--latency", "--fractions", "1.0")["latency"]
    assert latency["n_prefixes"] == 5
    assert latency["hybrid_ms_median"] > 0
    assert latency["semantic_ms_median"] > 0
    assert latency["added_ms_median"] == pytest.approx(
        latency["hybrid_ms_median"] - latency["semantic_ms_median"], abs=5
    )


def test_the_blend_ceiling_bounds_the_served_ranking(files: dict[str, Path], minilm: Encoder) -> None:
    report = evaluate(files, "--blend-ceiling")
    ceiling = report["blend_ceiling"]
    assert ceiling["weights"][0] == 0.0 and ceiling["weights"][-1] == 1.0
    assert list(ceiling["hit_at_k"]) == ["0.25", "0.5", "0.75", "1.0"]
    # Every share the served blend uses is on the grid and the cut-off can only remove hits, so
    # the ceiling is at least the served ranking at every fraction.
    for fraction, hit in ceiling["hit_at_k"].items():
        assert hit >= report["hit_at_k"][fraction]
    assert ceiling["mean_hit_at_k"] == pytest.approx(sum(ceiling["hit_at_k"].values()) / 4, abs=1e-4)


def test_readable_table_without_json(files: dict[str, Path], minilm: Encoder) -> None:
    out = StringIO()
    call_command(
        "evaluate",
        *("--corpus-csv", str(files["corpus"]), "--queries-csv", str(files["queries"])),
        *("--encoder", "minilm", "--cache-dir", str(files["cache"]), "--baselines", "--blend-ceiling"),
        stdout=out,
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "encoder minilm, k=5, 5 queries, 6 corpus questions"
    assert [line.split()[0] for line in lines[2:6]] == ["hybrid", "semantic", "lexical", "ceiling"]


def test_bad_input_is_refused_with_the_fix(files: dict[str, Path], tmp_path: Path, minilm: Encoder) -> None:
    unknown = write_csv(tmp_path / "q.csv", ["query", "target_id"], [("anything", "nope")])
    with pytest.raises(CommandError, match="'nope' is not in the corpus"):
        call_command("evaluate", "--corpus-csv", str(files["corpus"]), "--queries-csv", str(unknown))
    with pytest.raises(CommandError, match="--fractions"):
        evaluate(files, "--fractions", "0,2")


def test_the_ranking_option_changes_the_ranking_and_the_report_names_the_change(
    files: dict[str, Path], minilm: Encoder
) -> None:
    served = evaluate(files)
    assert "ranking" not in served and served["mean_hit_at_k"] > 0.5
    # A cut-off no blended score reaches: every query is left with no suggestion.
    silenced = evaluate(files, "--ranking", "min_score=1.5", "--ranking", "semantic_candidates=20")
    assert silenced["ranking"] == {"min_score": 1.5, "semantic_candidates": 20}
    assert silenced["mean_hit_at_k"] == 0.0 and set(silenced["no_suggestion"].values()) == {1.0}
    with pytest.raises(CommandError, match="no such field; one of .*lexical_share"):
        evaluate(files, "--ranking", "lexical_weight=1")
    with pytest.raises(CommandError, match="semantic_candidates takes a int"):
        evaluate(files, "--ranking", "semantic_candidates=many")


def test_a_query_encoder_is_trained_on_extra_questions_when_given(
    files: dict[str, Path], tmp_path: Path, minilm: Encoder
) -> None:
    extra = tmp_path / "extra.txt"
    extra.write_text("Can I export my data?\nHow do I change my email address?\n\nWhere is my receipt?\n")
    args = ("--train-query-encoder", "--query-encoder-steps", "2", "--query-encoder-questions", str(extra))
    trained = evaluate(files, *args)["query_encoder"]
    assert trained["extra_questions"] == 3 and trained["questions"] == len(CORPUS) + 3 and trained["steps"] == 2
    out = StringIO()
    call_command(
        "evaluate",
        *("--corpus-csv", str(files["corpus"]), "--queries-csv", str(files["queries"]), "--encoder", "minilm"),
        *("--cache-dir", str(files["cache"]), *args),
        stdout=out,
        stderr=StringIO(),
    )
    assert "9 questions (3 extra given with --query-encoder-questions), 2 steps" in out.getvalue()  # cached
    with pytest.raises(CommandError, match="no 'question' column"):
        evaluate(files, "--train-query-encoder", "--query-encoder-questions", str(files["queries"]))


def test_cut_keeps_at_least_one_character() -> None:
    assert cut("abcdefgh", 0.25) == "ab"
    assert cut("abc", 0.1) == "a"
    assert cut("abc", 1.0) == "abc"


def test_synonyms_are_measured_with_and_without(files: dict[str, Path], tmp_path: Path, minilm: Encoder) -> None:
    queries = write_csv(
        tmp_path / "q.csv", ["query", "target_id"], [("my receipts", "a2"), ("phone application", "a4")]
    )
    synonyms = write_csv(tmp_path / "s.csv", ["terms", "one_way_to"], [("receipts", "invoices"), ("phone", "mobile")])
    files = files | {"queries": queries}
    report = evaluate(files, "--synonyms", str(synonyms), "--fractions", "1.0")
    assert report["synonyms"]["entries"] == 2
    assert set(report["synonyms"]["without"]) >= FIELDS
    # "receipts" appears in no question: only the synonym lets the lexical side find the invoices.
    assert report["mrr"]["1.0"] >= report["synonyms"]["without"]["mrr"]["1.0"]
    out = StringIO()
    call_command(
        "evaluate",
        *("--corpus-csv", str(files["corpus"]), "--queries-csv", str(queries), "--encoder", "minilm"),
        *("--cache-dir", str(files["cache"]), "--synonyms", str(synonyms)),
        stdout=out,
    )
    assert [line.split()[0] for line in out.getvalue().splitlines()[2:4]] == ["synonyms", "hybrid"]
    bad = write_csv(tmp_path / "bad.csv", ["words"], [("wifi",)])
    with pytest.raises(CommandError, match="'terms' column"):
        evaluate(files, "--synonyms", str(bad))


def test_learning_keys_from_one_split_finds_a_rewording_in_another(
    files: dict[str, Path], tmp_path: Path, minilm: Encoder
) -> None:
    rows = [
        *QUERIES,
        ("my phone with the authenticator app was stolen", "a1", "dev"),
        ("stolen phone authenticator", "a1", "test"),
    ]
    queries = write_csv(tmp_path / "learn.csv", ["query", "target_id", "split"], rows)
    files = files | {"queries": queries}
    plain = evaluate(files, "--split", "test", "--k", "1")
    learnt = evaluate(files, "--split", "test", "--k", "1", "--learn-from", str(queries))
    assert learnt["mean_hit_at_k"] >= plain["mean_hit_at_k"]
    assert learnt["hit_at_k"]["1.0"] > plain["hit_at_k"]["1.0"]
    with pytest.raises(CommandError, match="would learn from the queries it scores"):
        evaluate(files, "--split", "test", "--learn-from", str(queries), "--learn-split", "test")
