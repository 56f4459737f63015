"""Ingest: counts, idempotence, merge vs replace, embedding reuse, failures that lose nothing."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from autocomplete import embedding_store
from autocomplete.builds import KEEP_SUPERSEDED_FILES, IndexWriteError, remove_orphan_files
from autocomplete.conf import app_settings
from autocomplete.encoder_registry import encoder_registry
from autocomplete.ingest import ingest_parsed, plan_ingest, reindex, withheld_removal_note
from autocomplete.models import Corpus, IndexBuild, QAPair, StoredEmbedding
from autocomplete.parsing import parse_qa_file
from autocomplete.search import suggestions_for
from embeddings.encoders import Encoder
from embeddings.vector_index import VectorIndex, set_threads, thread_cap

from .conftest import SMALL_FAQ, faq_csv

pytestmark = pytest.mark.django_db


def parsed(pairs: list[tuple[str, str]] = SMALL_FAQ):
    return parse_qa_file(faq_csv(pairs), filename="faq.csv")


def test_reloading_the_same_file_changes_nothing(small_corpus: Corpus) -> None:
    build = IndexBuild.objects.get(corpus=small_corpus, is_live=True)
    report = ingest_parsed(small_corpus, parsed(), encoder_key="minilm")
    assert (report.added, report.updated, report.unchanged, report.removed) == (0, 0, 10, 0)
    assert report.index_build is None
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True) == build


def test_merge_updates_changed_answers_and_adds_new_questions(small_corpus: Corpus) -> None:
    pairs = [(q, a + " (updated)") if i == 0 else (q, a) for i, (q, a) in enumerate(SMALL_FAQ)]
    pairs.append(("Do you offer refunds?", "Within 30 days."))
    report = ingest_parsed(small_corpus, parsed(pairs[:3] + pairs[-1:]), encoder_key="minilm")
    assert (report.added, report.updated, report.unchanged, report.removed) == (1, 1, 2, 0)
    assert QAPair.objects.filter(corpus=small_corpus).count() == 11
    assert QAPair.objects.get(question=SMALL_FAQ[0][0]).answer.endswith("(updated)")
    assert report.index_build is not None and report.index_build.vector_count == 11


def test_replace_makes_the_corpus_exactly_the_file(small_corpus: Corpus) -> None:
    plan = plan_ingest(small_corpus, parsed(SMALL_FAQ[:4]), mode="replace")
    assert (len(plan.to_add), len(plan.to_remove), plan.unchanged) == (0, 6, 4)
    report = ingest_parsed(small_corpus, parsed(SMALL_FAQ[:4]), mode="replace", encoder_key="minilm")
    assert report.removed == 6
    assert QAPair.objects.filter(corpus=small_corpus).count() == 4
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True).vector_count == 4


def test_rows_with_ids_update_the_question_text(db: None, minilm: Encoder) -> None:
    corpus = Corpus.objects.create(name="C", slug="c", default_encoder="minilm")
    first = parse_qa_file(b"id,question,answer\nk1,How do I sign in?,Use SSO\n", filename="a.csv")
    ingest_parsed(corpus, first)
    second = parse_qa_file(b"id,question,answer\nk1,How do I log in?,Use SSO\n", filename="a.csv")
    report = ingest_parsed(corpus, second)
    assert (report.added, report.updated) == (0, 1)
    assert QAPair.objects.get(corpus=corpus, external_id="k1").question == "How do I log in?"


def test_unchanged_questions_are_not_embedded_again(small_corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded: list[str] = []
    minilm = encoder_registry().get("minilm")  # the instance ingest uses (settings overrides renew it)
    original = minilm.encode

    def spy(texts, **kwargs):
        embedded.extend(texts)
        return original(texts, **kwargs)

    monkeypatch.setattr(minilm, "encode", spy)
    pairs = [*SMALL_FAQ, ("Do you offer refunds?", "Within 30 days.")]
    ingest_parsed(small_corpus, parsed(pairs), encoder_key="minilm")
    assert embedded == ["Do you offer refunds?"]
    assert StoredEmbedding.objects.filter(encoder=embedding_store.embedding_key(minilm)).count() == 11


def test_the_index_build_reads_no_vector_back_that_the_ingest_just_computed(db: None, minilm: Encoder) -> None:
    corpus = Corpus(name="C", slug="c", default_encoder="minilm")
    table = StoredEmbedding._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        report = ingest_parsed(corpus, parsed(), encoder_key="minilm")
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and table in q["sql"]]
    # One look-up for the ten new questions before embedding them; none from the index build.
    assert len(reads) == 1
    assert report.embedded == 10
    assert report.index_build is not None and report.index_build.vector_count == 10


def test_reindex_reads_the_stored_vectors_once(small_corpus: Corpus) -> None:
    table = StoredEmbedding._meta.db_table
    with CaptureQueriesContext(connection) as queries:
        build = reindex(small_corpus, encoder_key="minilm")
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT") and table in q["sql"]]
    # One look-up for the ten questions before the transaction; none again from the index build.
    assert len(reads) == 1
    assert build.vector_count == 10


def test_a_failed_build_leaves_pairs_and_live_index_intact(
    small_corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)

    def broken_save(self: VectorIndex, path: Path) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(VectorIndex, "save", broken_save)
    with pytest.raises(IndexWriteError, match="disk full"):
        ingest_parsed(small_corpus, parsed(SMALL_FAQ[:2]), mode="replace", encoder_key="minilm")
    assert QAPair.objects.filter(corpus=small_corpus).count() == 10
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True) == live
    result = suggestions_for("cancel my plan", corpus="small")
    assert result.suggestions[0].question == "How do I cancel my subscription?"


def test_superseded_files_are_pruned_and_orphans_removed(
    small_corpus: Corpus, django_capture_on_commit_callbacks, configure
) -> None:
    configure(SUPERSEDED_GRACE_SECONDS=0.001)
    for extra in range(4):
        time.sleep(0.002)
        with django_capture_on_commit_callbacks(execute=True):
            ingest_parsed(small_corpus, parsed([*SMALL_FAQ, (f"Extra question {extra}?", "x")]), encoder_key="minilm")
    builds = IndexBuild.objects.filter(corpus=small_corpus)
    assert builds.filter(is_live=True).count() == 1
    assert builds.count() == 1 + KEEP_SUPERSEDED_FILES
    files = sorted(p.name for p in app_settings().index_dir.iterdir() if p.suffix == ".faiss")
    assert files == sorted(builds.values_list("file_name", flat=True))
    assert len(list(app_settings().index_dir.glob("*.npz"))) == len(files)  # each with its lexical index
    orphan = app_settings().index_dir / ".tmp-crashed.faiss"
    orphan.write_bytes(b"half")
    assert remove_orphan_files(min_age_seconds=0) == [".tmp-crashed.faiss"]
    assert sorted(p.name for p in app_settings().index_dir.iterdir() if p.suffix == ".faiss") == files


def test_deleting_a_corpus_deletes_its_index_files(small_corpus: Corpus, django_capture_on_commit_callbacks) -> None:
    assert any(app_settings().index_dir.iterdir())
    with django_capture_on_commit_callbacks(execute=True):
        small_corpus.delete()
    assert not any(app_settings().index_dir.iterdir())


def test_ingest_command_reports_counts_and_rejected_lines(db: None, minilm: Encoder, tmp_path: Path) -> None:
    source = tmp_path / "faq.jsonl"
    source.write_text(
        '{"question": "How do I pay?", "answer": "By card."}\n'
        '{"question": "", "answer": "orphan"}\n'
        '{"question": "Refunds?", "answer": "30 days", "url": "https://x.example/r"}\n'
    )
    out = io.StringIO()
    call_command("ingest", str(source), "--corpus", "shop", "--encoder", "minilm", stdout=out)
    text = out.getvalue()
    assert "added: 2" in text and "rejected: 1" in text and "line 2: question is empty" in text
    assert "index: 2 vectors (flat) live" in text and "vectors: 2 embedded, 0 reused" in text
    out = io.StringIO()
    call_command("ingest", str(source), "--corpus", "shop", stdout=out)
    assert "unchanged: 2" in out.getvalue() and "index: unchanged" in out.getvalue()
    assert Corpus.objects.get(slug="shop").default_encoder == "minilm"


def test_ingest_command_errors(db: None, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="is not a file"):
        call_command("ingest", str(tmp_path / "none.csv"), "--corpus", "x")
    bad = tmp_path / "bad.csv"
    bad.write_bytes("question,answer\nA,b\n".encode("utf-16"))
    with pytest.raises(CommandError, match="UTF-16"):
        call_command("ingest", str(bad), "--corpus", "x")
    good = tmp_path / "good.csv"
    good.write_text("question,answer\nA?,b\n")
    with pytest.raises(CommandError, match="not a valid slug"):
        call_command("ingest", str(good), "--corpus", "Not A Slug")
    with pytest.raises(CommandError, match="GIST-small"):
        call_command("ingest", str(good), "--corpus", "x", "--encoder", "gist-small")
    assert not Corpus.objects.filter(slug="x").exists()


def test_default_encoder_falls_back_openly(
    db: None,
    minilm: Encoder,
    configure,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure(DEFAULT_ENCODER="ivysaur")
    source = tmp_path / "faq.csv"
    source.write_bytes(faq_csv())
    out = io.StringIO()
    call_command("ingest", str(source), "--corpus", "help", stdout=out)
    assert "encoder 'minilm'" in out.getvalue()
    assert "Falling back to encoder 'minilm'" in caplog.text
    corpus = Corpus.objects.get(slug="help")
    assert corpus.default_encoder == "ivysaur"
    result = suggestions_for("reset password")
    assert (result.encoder.key, result.is_fallback) == ("minilm", True)


def test_reindex_command(small_corpus: Corpus) -> None:
    out = io.StringIO()
    call_command("reindex", "small", "--encoder", "minilm", stdout=out)
    assert "small/minilm: 10 vectors (flat) live" in out.getvalue()
    assert IndexBuild.objects.filter(corpus=small_corpus).count() == 2
    with pytest.raises(CommandError, match="Unknown corpus"):
        call_command("reindex", "nope")


def test_an_ingest_landing_while_another_embeds_is_not_lost_or_duplicated(small_corpus: Corpus) -> None:
    """Two jobs on one corpus: the later commit plans again and neither fails on a duplicate."""
    shared = ("Do you offer refunds?", "Within 30 days.")
    other = parsed([shared, ("Can I pay by invoice?", "Yes, for annual plans.")])
    landed: list[str] = []

    def other_job_lands_meanwhile(stage: str, done: int, total: int) -> None:
        if stage == "embedded" and not landed:
            landed.append(ingest_parsed(small_corpus, other, encoder_key="minilm").summary())

    report = ingest_parsed(
        small_corpus,
        parsed([shared, ("Is there a free trial?", "14 days.")]),
        encoder_key="minilm",
        progress=other_job_lands_meanwhile,
    )
    # The shared question's vector, stored by the first job's batch, was reused by the other.
    assert landed == ["2 added, 0 updated, 0 unchanged, 0 removed, 0 rejected; vectors: 1 embedded, 1 reused"]
    # Planned before the other job landed, applied after it: the shared question is no longer new.
    assert (report.added, report.unchanged) == (1, 1)
    questions = list(QAPair.objects.filter(corpus=small_corpus).values_list("question", flat=True))
    assert len(questions) == 13 and questions.count(shared[0]) == 1
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True).vector_count == 13


def test_a_corpus_created_by_another_ingest_meanwhile_is_used_not_created_twice(db: None, minilm: Encoder) -> None:
    def same_slug_lands_meanwhile(stage: str, done: int, total: int) -> None:
        if stage == "embedded" and not Corpus.objects.filter(slug="new").exists():
            ingest_parsed(
                Corpus(name="New", slug="new", default_encoder="minilm"), parsed(SMALL_FAQ[:2]), encoder_key="minilm"
            )

    report = ingest_parsed(
        Corpus(name="New", slug="new", default_encoder="minilm"),
        parsed(SMALL_FAQ[:3]),
        encoder_key="minilm",
        progress=same_slug_lands_meanwhile,
    )
    assert (report.added, report.unchanged) == (1, 2)
    assert Corpus.objects.get(slug="new").pairs.count() == 3


def test_a_build_deletes_vectors_of_earlier_exports_only(small_corpus: Corpus, minilm: Encoder) -> None:
    current = embedding_store.embedding_key(minilm)
    backend = f"minilm:{minilm.backend_label}"
    vector = bytes(384 * 4)
    kept_elsewhere = [f"minilm:{'onnx' if minilm.backend_label != 'onnx' else 'torch'}", "ivysaur:" + backend[7:]]
    stale = [backend, f"{backend}/f1-0123456789ab"]  # the key before vector spaces, an older export
    for key in [*stale, *kept_elsewhere]:
        StoredEmbedding.objects.create(encoder=key, text_sha256="0" * 64, vector=vector)
    call_command("reindex", "small", "--encoder", "minilm", stdout=io.StringIO())
    remaining = set(StoredEmbedding.objects.values_list("encoder", flat=True))
    assert remaining == {current, *kept_elsewhere}
    assert StoredEmbedding.objects.filter(encoder=current).count() == len(SMALL_FAQ)


def test_the_next_chunk_is_encoded_while_one_is_stored(db: None, configure, monkeypatch) -> None:
    configure(EMBED_BATCH_SIZE=1)  # 8 texts per encode call: two calls for ten questions
    minilm = encoder_registry().get("minilm")
    original_encode = minilm.encode
    second_started = threading.Event()
    calls: list[int] = []

    def encode(texts, **kwargs):
        calls.append(len(texts))
        if len(calls) == 2:
            second_started.set()
        return original_encode(texts, **kwargs)

    original_store = StoredEmbedding.objects.bulk_create
    overlapped: list[bool] = []

    def store(rows, **kwargs):
        if not overlapped:
            overlapped.append(second_started.wait(timeout=10))
        return original_store(rows, **kwargs)

    monkeypatch.setattr(minilm, "encode", encode)
    monkeypatch.setattr(StoredEmbedding.objects, "bulk_create", store)
    vectors = embedding_store.embed_texts(minilm, [question for question, _ in SMALL_FAQ]).vectors
    assert calls == [8, 2]
    assert overlapped == [True]  # the first chunk's rows were written while the second encoded
    # Each row is its own text's vector (int8 vectors move a little with the batch: compare by cosine).
    alone = np.vstack([original_encode([question]) for question, _ in SMALL_FAQ])
    assert list(np.argmax(vectors @ alone.T, axis=1)) == list(range(len(SMALL_FAQ)))


def test_an_encoder_failing_midway_keeps_what_it_embedded(small_corpus: Corpus, configure, monkeypatch) -> None:
    configure(EMBED_BATCH_SIZE=1)
    minilm = encoder_registry().get("minilm")
    original_encode = minilm.encode
    calls: list[int] = []

    def encode(texts, **kwargs):
        calls.append(len(texts))
        if len(calls) == 2:
            raise RuntimeError("encoder crashed")
        return original_encode(texts, **kwargs)

    monkeypatch.setattr(minilm, "encode", encode)
    new = [(f"New question number {n}?", "An answer.") for n in range(12)]
    stored_before = StoredEmbedding.objects.count()
    with pytest.raises(RuntimeError, match="encoder crashed"):
        ingest_parsed(small_corpus, parsed([*SMALL_FAQ, *new]), encoder_key="minilm")
    assert QAPair.objects.filter(corpus=small_corpus).count() == 10  # nothing applied
    # The first chunk's vectors were stored before the failure: a retry does not embed them again.
    assert StoredEmbedding.objects.count() == stored_before + 8


def test_the_index_is_built_with_the_callers_thread_cap(db: None, minilm: Encoder, monkeypatch) -> None:
    # The graph is built in another thread, and OpenMP keeps its thread cap per thread: a
    # process capped to one thread per worker must not build on all cores.
    seen: list[int] = []
    build = VectorIndex.build

    def spy(*args, **kwargs):
        seen.append(thread_cap())
        return build(*args, **kwargs)

    monkeypatch.setattr(VectorIndex, "build", spy)
    before = thread_cap()
    set_threads(7)  # no machine's default
    try:
        ingest_parsed(Corpus(name="C", slug="c", default_encoder="minilm"), parsed(), encoder_key="minilm")
    finally:
        set_threads(before)
    assert seen == [7]


# --- files that could not be read whole ---------------------------------------------------------


def test_replace_removes_nothing_while_a_row_cannot_be_read(small_corpus: Corpus) -> None:
    data = faq_csv(SMALL_FAQ[:3]) + b'"Unclosed quote?,the rest of the file is lost\r\n'
    parsed = parse_qa_file(data, filename="faq.csv")
    assert parsed.unreadable_rows == 1
    plan = plan_ingest(small_corpus, parsed, mode="replace")
    assert (plan.to_remove, plan.unreadable_rows, plan.unchanged) == ([], 1, 3)
    report = ingest_parsed(small_corpus, parsed, mode="replace")
    assert report.removed == 0 and small_corpus.pairs.count() == 10
    assert report.removal_note == "1 row could not be read, so no pair was removed; fix them and upload again."
    # A row refused by validation (read, but empty) is no reason to keep the pairs the file leaves out.
    parsed = parse_qa_file(faq_csv([*SMALL_FAQ[:3], ("Empty answer?", "")]), filename="faq.csv")
    assert parsed.unreadable_rows == 0
    report = ingest_parsed(small_corpus, parsed, mode="replace")
    assert (report.removed, report.removal_note) == (7, "") and small_corpus.pairs.count() == 3


def test_withheld_removal_note_counts_rows() -> None:
    assert withheld_removal_note(0) == ""
    assert withheld_removal_note(1234, done=False) == (
        "1,234 rows could not be read, so no pair will be removed; fix them and upload again."
    )


def test_a_field_over_the_csv_limit_no_longer_ends_the_parse_of_a_replace(small_corpus: Corpus, tmp_path: Path) -> None:
    # Before, the csv module stopped at this 200,000-character answer and --replace removed every pair after it.
    rows = [*SMALL_FAQ[:4], ("Where is the full manual?", "x" * 200_000), *SMALL_FAQ[4:]]
    source = tmp_path / "faq.csv"
    source.write_bytes(faq_csv(rows))
    out = io.StringIO()
    call_command("ingest", str(source), "--corpus", "small", "--replace", stdout=out)
    text = out.getvalue()
    assert "unchanged: 10" in text and "removed: 0" in text
    assert "line 6: answer is longer than 20000 characters" in text
    assert small_corpus.pairs.count() == 10


def test_the_ingest_command_says_why_a_replace_removed_nothing(small_corpus: Corpus, tmp_path: Path) -> None:
    source = tmp_path / "faq.csv"
    source.write_bytes(b'question,answer\r\n"Two" quotes?,x\r\nA,b,c\r\n' + faq_csv(SMALL_FAQ[:2])[17:])
    out = io.StringIO()
    call_command("ingest", str(source), "--corpus", "small", "--replace", stdout=out)
    text = out.getvalue()
    assert "removed: 0" in text and "unchanged: 2" in text
    assert "2 rows could not be read, so no pair was removed; fix them and upload again." in text
    assert "line 2: unreadable CSV" in text and "line 3: 3 cells for 2 columns" in text
    assert small_corpus.pairs.count() == 10


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("deep.json", "[" * 5000 + "]" * 5000, "nested too deeply"),
        ("quotes.csv", '",' * 500_000 + "\nA?,a\n", "No question and answer columns"),
        ("number.json", json.dumps([{"question": "A?", "answer": 1}]).replace("1", "1" * 5000), "number"),
    ],
)
def test_the_ingest_command_refuses_hostile_files_quickly_without_a_traceback(
    db: None, tmp_path: Path, name: str, content: str, message: str
) -> None:
    source = tmp_path / name
    source.write_text(content)
    started = time.monotonic()
    with pytest.raises(CommandError, match=message):
        call_command("ingest", str(source), "--corpus", "x")
    assert time.monotonic() - started < 10  # generous for a loaded machine; the sniffer took minutes
    assert not Corpus.objects.filter(slug="x").exists()
