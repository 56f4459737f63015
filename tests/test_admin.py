"""Admin upload through the Django test client: permissions, CSRF, formats, refusals, preview, merge
vs replace, job page, export and delete. Jobs run in the request here (ImmediateBackend)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from autocomplete import jobs
from autocomplete.conf import app_settings
from autocomplete.exporting import neutralise_cell
from autocomplete.ingest import ingest_parsed, plan_ingest
from autocomplete.models import ApiKey, Corpus, IndexBuild, IngestJob, QAPair, Rule, RuleAnswer, Synonym
from autocomplete.parsing import parse_qa_file
from autocomplete.uploads import upload_dir

from .conftest import SMALL_FAQ, faq_csv

pytestmark = pytest.mark.django_db

UPLOAD_URL = "/admin/autocomplete/corpus/upload/"


@pytest.fixture(autouse=True)
def _private_uploads(configure, tmp_path: Path) -> None:
    configure(UPLOAD_DIR=tmp_path / "uploads")


def upload(client: Client, data: bytes, name: str = "faq.csv", **fields: object):
    form = {"new_corpus_name": "Help", "new_corpus_slug": "help", "encoders": ["minilm"], "mode": "merge"}
    form.update(fields)  # type: ignore[arg-type]
    return client.post(UPLOAD_URL, {**form, "file": SimpleUploadedFile(name, data)})


def preview_job(response) -> IngestJob:
    assert response.status_code == 302, response.content.decode()[:2000]
    job_id = int(response["Location"].rstrip("/").split("/")[-2])
    return IngestJob.objects.get(pk=job_id)


def confirm(client: Client, job: IngestJob) -> IngestJob:
    response = client.post(f"/admin/autocomplete/corpus/upload/{job.pk}/preview/", {"confirm": "1"})
    assert response.status_code == 302
    assert response["Location"] == f"/admin/autocomplete/ingestjob/{job.pk}/"
    job.refresh_from_db()
    return job


def staff(permissions: list[str]) -> Client:
    user = User.objects.create_user("-".join(permissions), password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=permissions))
    client = Client()
    client.force_login(user)
    return client


def test_only_staff_with_add_permission_may_upload(client: Client, admin_client: Client, minilm) -> None:
    assert client.get(UPLOAD_URL).status_code == 302  # anonymous: to the login page
    visitor = User.objects.create_user("visitor", password="pw")
    client.force_login(visitor)
    assert client.get(UPLOAD_URL)["Location"].startswith("/admin/login/")
    assert upload(client, faq_csv()).status_code == 302 and not IngestJob.objects.exists()
    viewer = staff(["view_corpus"])
    assert viewer.get(UPLOAD_URL).status_code == 403
    assert upload(viewer, faq_csv()).status_code == 403
    assert not IngestJob.objects.exists()
    page = admin_client.get(UPLOAD_URL).content.decode()
    assert 'name="encoders"' in page and 'value="minilm" id="id_encoders_2" checked' in page
    editor = staff(["view_corpus", "add_corpus"])
    job = confirm(editor, preview_job(upload(editor, faq_csv())))
    assert job.status == "succeeded"
    assert 'data-status="succeeded"' in editor.get(f"/admin/autocomplete/ingestjob/{job.pk}/").content.decode()
    assert viewer.get(f"/admin/autocomplete/ingestjob/{job.pk}/progress/").status_code == 200
    assert viewer.post(f"/admin/autocomplete/ingestjob/{job.pk}/control/", {"action": "rerun"}).status_code == 403
    assert client.get(f"/admin/autocomplete/ingestjob/{job.pk}/progress/").status_code == 302  # not staff


def test_csrf_is_enforced(db: None) -> None:
    user = User.objects.create_superuser("root", password="pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert upload(client, faq_csv()).status_code == 403
    assert not IngestJob.objects.exists()


def _delimited(delimiter: str, header: tuple[str, str] = ("question", "answer"), bom: bool = False) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(SMALL_FAQ)
    return (b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode()


FORMATS = {
    "csv": ("faq.csv", _delimited(","), "CSV"),
    "csv-bom-aliases": ("faq.csv", _delimited(",", ("Q", "A"), bom=True), "CSV"),
    "tsv": ("faq.tsv", _delimited("\t", ("title", "body")), "TSV"),
    "semicolon": ("faq.txt", _delimited(";"), "CSV"),
    "json": ("faq.json", json.dumps([{"q": q, "a": a} for q, a in SMALL_FAQ]).encode(), "JSON"),
    "jsonl": ("faq.jsonl", "\n".join(json.dumps({"title": q, "body": a}) for q, a in SMALL_FAQ).encode(), "JSONL"),
}


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_every_format_is_previewed_then_ingested(admin_client: Client, minilm, kind: str) -> None:
    name, data, label = FORMATS[kind]
    job = preview_job(upload(admin_client, data, name))
    page = admin_client.get(f"/admin/autocomplete/corpus/upload/{job.pk}/preview/").content.decode()
    assert f'<td id="preview-format">{label}</td>' in page
    assert '<td data-count="added">10</td>' in page and '<td data-count="rejected">0</td>' in page
    assert "How do I reset my password?" in page  # first rows
    if label.startswith("JSON"):  # objects are matched key by key, by any alias
        assert "question ← <code>question / q / title / query / prompt</code>" in page
    assert not Corpus.objects.exists()  # nothing written before confirmation
    job = confirm(admin_client, job)
    assert job.status == "succeeded", job.error
    corpus = Corpus.objects.get(slug="help")
    assert job.corpus == corpus and corpus.pairs.count() == 10
    assert IndexBuild.objects.get(corpus=corpus, is_live=True).encoder == "minilm"
    response = admin_client.get("/api/suggest", {"q": "cancel my plan", "corpus": "help"})
    assert response.json()["suggestions"][0]["question"] == "How do I cancel my subscription?"


def test_column_mapping_is_shown(admin_client: Client) -> None:
    job = preview_job(upload(admin_client, b"ID;Title;Body\n1;How?;So.\n", "faq.csv"))
    page = admin_client.get(f"/admin/autocomplete/corpus/upload/{job.pk}/preview/").content.decode()
    assert "question ← <code>Title</code>" in page and "answer ← <code>Body</code>" in page
    assert "external_id ← <code>ID</code>" in page


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"
REFUSALS = {
    "utf16": ("faq.csv", "question,answer\nA?,b\n".encode("utf-16"), "UTF-16"),
    "binary": ("faq.csv", bytes(range(256)) * 4, "looks binary"),
    "png-renamed": ("faq.csv", PNG, "looks binary"),
    "latin1": ("faq.csv", "question,answer\nCafé?,oui\n".encode("latin-1"), "not valid UTF-8"),
    "no-columns": ("faq.csv", b"foo,bar\n1,2\n", "No question and answer columns"),
    "empty": ("faq.csv", b"", "The submitted file is empty"),  # refused by Django's form field
    "blank": ("faq.csv", b"  \n\n", "The file is empty"),
    "bad-json": ("faq.json", b'[{"q": "x"', "Invalid JSON"),
}


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_unreadable_files_are_refused_and_nothing_is_written(admin_client: Client, kind: str) -> None:
    name, data, message = REFUSALS[kind]
    response = upload(admin_client, data, name)
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page and ("Nothing was written." in page or kind == "empty")
    assert not IngestJob.objects.exists() and not Corpus.objects.exists()
    assert list(upload_dir().iterdir()) == []


def test_size_and_row_limits(admin_client: Client, configure) -> None:
    configure(MAX_UPLOAD_BYTES=100)
    response = upload(admin_client, faq_csv())
    assert "the limit is 100 (AUTOCOMPLETE_MAX_UPLOAD_BYTES)" in response.content.decode()
    configure(MAX_UPLOAD_BYTES=10_000)
    configure(MAX_ROWS=5)
    response = upload(admin_client, faq_csv())
    assert "more than 5 rows (AUTOCOMPLETE_MAX_ROWS)" in response.content.decode()
    assert not IngestJob.objects.exists() and list(upload_dir().iterdir()) == []


def test_an_encoder_without_weights_is_refused_on_the_form(
    admin_client: Client, tmp_path: Path, settings, random_model_dirs: dict[str, Path], configure
) -> None:
    page = upload(admin_client, faq_csv(), encoders=["ivysaur"]).content.decode()
    assert "Ivysaur has no local copy and downloads are off" in page and "fetch_encoders ivysaur" in page
    configure(ENCODERS={**settings.AUTOCOMPLETE["ENCODERS"], "gist-small": {"PATH": str(tmp_path)}})
    page = upload(admin_client, faq_csv(), encoders=["gist-small", "minilm"]).content.decode()
    assert f"GIST-small weights not found at {tmp_path}" in page
    assert not IngestJob.objects.exists()
    # Ivysaur is the default encoder; where it has no weights the form proposes the open fallback.
    configure(DEFAULT_ENCODER="ivysaur")
    assert 'value="minilm" id="id_encoders_2" checked' in admin_client.get(UPLOAD_URL).content.decode()
    ivysaur = {"PATH": str(random_model_dirs["ivysaur"])}
    configure(ENCODERS={**settings.AUTOCOMPLETE["ENCODERS"], "ivysaur": ivysaur})
    page = admin_client.get(UPLOAD_URL).content.decode()
    assert 'value="ivysaur" id="id_encoders_0" checked' in page
    assert 'value="minilm" id="id_encoders_2" checked' not in page


def test_bad_rows_are_rejected_one_by_one(admin_client: Client, configure, minilm) -> None:
    configure(MAX_QUESTION_LENGTH=50)
    configure(MAX_ANSWER_LENGTH=40)
    data = (
        "question,answer\n"
        "How do I pay?,By card.\n"  # line 2
        ",no question\n"  # 3
        f"{'Why ' * 20}?,too long\n"  # 4
        f"Long answer?,{'x' * 41}\n"  # 5
        "how do I PAY,Duplicate.\n"  # 6
        "Refunds?,Within 30 days.\n"  # 7
    ).encode()
    job = preview_job(upload(admin_client, data))
    assert (job.preview["added"], job.preview["rejected_count"]) == (2, 4)
    assert [(r["line"], r["reason"]) for r in job.preview["rejected"]] == [
        (3, "question is empty"),
        (4, "question is longer than 50 characters"),
        (5, "answer is longer than 40 characters"),
        (6, "duplicate question (same as line 2)"),
    ]
    page = admin_client.get(f"/admin/autocomplete/corpus/upload/{job.pk}/preview/").content.decode()
    assert "Line 6: duplicate question (same as line 2)" in page
    job = confirm(admin_client, job)
    assert (job.report["added"], job.report["rejected_count"]) == (2, 4)
    report = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/").content.decode()
    assert "Line 3: question is empty" in report and '<td data-count="added">2</td>' in report


@pytest.mark.parametrize(("mode", "removed", "total"), [("merge", 0, 11), ("replace", 7, 4)])
def test_merge_and_replace_preview_counts_match_the_outcome(
    admin_client: Client, small_corpus: Corpus, mode: str, removed: int, total: int
) -> None:
    pairs = [
        (SMALL_FAQ[0][0], "A new answer."),
        *SMALL_FAQ[1:3],
        ("Do you offer refunds?", "Within 30 days."),
        ("", "x"),
    ]
    job = preview_job(upload(admin_client, faq_csv(pairs), corpus=small_corpus.pk, mode=mode))
    counts = {key: job.preview[key] for key in ("added", "updated", "unchanged", "removed", "rejected_count")}
    assert counts == {"added": 1, "updated": 1, "unchanged": 2, "removed": removed, "rejected_count": 1}
    assert small_corpus.pairs.count() == 10  # preview wrote nothing
    job = confirm(admin_client, job)
    assert {key: job.report[key] for key in counts} == counts
    assert small_corpus.pairs.count() == total
    assert QAPair.objects.get(corpus=small_corpus, question=SMALL_FAQ[0][0]).answer == "A new answer."
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True).vector_count == total


def test_cancel_at_preview_writes_nothing_and_forgets_the_file(admin_client: Client, small_corpus: Corpus) -> None:
    job = preview_job(upload(admin_client, faq_csv(SMALL_FAQ[:2]), corpus=small_corpus.pk, mode="replace"))
    assert len(list(upload_dir().iterdir())) == 1
    response = admin_client.post(f"/admin/autocomplete/corpus/upload/{job.pk}/preview/", {"cancel": "1"})
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled" and list(upload_dir().iterdir()) == []
    assert small_corpus.pairs.count() == 10
    # A confirmation arriving after the cancel does nothing.
    admin_client.post(f"/admin/autocomplete/corpus/upload/{job.pk}/preview/", {"confirm": "1"})
    job.refresh_from_db()
    assert job.status == "cancelled" and small_corpus.pairs.count() == 10


def test_the_upload_is_stored_privately_under_a_random_name(admin_client: Client, settings) -> None:
    job = preview_job(upload(admin_client, faq_csv(), "../../evil name.csv"))
    stored = list(upload_dir().iterdir())
    assert [path.name for path in stored] == [job.stored_file]
    assert "evil" not in job.stored_file and stored[0].read_bytes() == faq_csv()
    assert stored[0].stat().st_mode & 0o077 == 0  # readable by the service user only
    assert not str(upload_dir()).startswith(str(settings.STATIC_ROOT))
    assert job.original_name == "evil name.csv"  # Django keeps only the base name, for display


def test_job_page_history_and_reindex_action(admin_client: Client, small_corpus: Corpus) -> None:
    job = confirm(admin_client, preview_job(upload(admin_client, faq_csv(), corpus=small_corpus.pk)))
    page = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/").content.decode()
    assert 'data-status="succeeded"' in page and "hx-trigger" not in page  # finished: polling stops
    assert "unchanged (already live)" in page
    live = IndexBuild.objects.get(corpus=small_corpus, is_live=True)
    response = admin_client.post(
        "/admin/autocomplete/corpus/", {"action": "reindex_action", "_selected_action": [small_corpus.pk]}
    )
    assert 'name="encoder"' in response.content.decode()  # asks which encoder first
    response = admin_client.post(
        "/admin/autocomplete/corpus/",
        {"action": "reindex_action", "_selected_action": [small_corpus.pk], "encoder": "minilm"},
    )
    assert response.status_code == 302
    reindex_job = IngestJob.objects.get(kind="reindex")
    assert reindex_job.status == "succeeded" and reindex_job.report["indexes"][0]["vectors"] == 10
    assert IndexBuild.objects.get(corpus=small_corpus, is_live=True) != live
    history = admin_client.get(f"/admin/autocomplete/corpus/{small_corpus.pk}/change/").content.decode()
    assert 'id="job-history"' in history
    assert f"#{job.pk}</a>" in history and f"#{reindex_job.pk}</a>" in history


def test_export_neutralises_formulas(admin_client: Client, db: None, minilm) -> None:
    corpus = Corpus.objects.create(name="X", slug="x", default_encoder="minilm")
    risky = ["=1+1", "+SUM(A1)", "-2", "@cmd", "\tTab", "\rCR", "Plain"]
    for number, text in enumerate(risky):
        QAPair.objects.create(corpus=corpus, question=f"{text} question {number}?", answer=text)
    response = admin_client.post(
        "/admin/autocomplete/corpus/", {"action": "export_csv_action", "_selected_action": [corpus.pk]}
    )
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="x.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(response).decode())))
    assert rows[0] == ["id", "question", "answer", "url", "tags", "featured"]
    assert [row[2] for row in rows[1:]] == ["'=1+1", "'+SUM(A1)", "'-2", "'@cmd", "'\tTab", "'\rCR", "Plain"]
    assert rows[1][1] == "'=1+1 question 0?"
    assert neutralise_cell("a=b") == "a=b"


def test_admin_delete_removes_the_corpus_and_its_index_files(
    admin_client: Client,
    small_corpus: Corpus,
    django_capture_on_commit_callbacks,
) -> None:
    assert any(app_settings().index_dir.iterdir())
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/autocomplete/corpus/",
            {"action": "delete_selected", "_selected_action": [small_corpus.pk], "post": "yes"},
        )
    assert response.status_code == 302
    assert not Corpus.objects.exists() and not any(app_settings().index_dir.iterdir())


def test_a_queued_job_page_polls_its_progress(admin_client: Client, small_corpus: Corpus, settings) -> None:
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    job = confirm(admin_client, preview_job(upload(admin_client, faq_csv(), corpus=small_corpus.pk)))
    assert job.status == "queued"
    page = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/").content.decode()
    assert "htmx" in page and 'hx-trigger="every 1s"' in page and 'value="cancel"' in page
    partial = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/progress/", headers={"HX-Request": "true"})
    assert partial.content.decode().lstrip().startswith('<div id="job-progress"')
    admin_client.post(f"/admin/autocomplete/ingestjob/{job.pk}/control/", {"action": "cancel"})
    stopped = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/progress/").content.decode()
    assert 'data-status="cancelled"' in stopped and "hx-trigger" not in stopped  # polling stops


def test_a_replace_with_unreadable_rows_removes_nothing_and_says_why(
    admin_client: Client, small_corpus: Corpus
) -> None:
    data = faq_csv(SMALL_FAQ[:2]) + b'"Half a quote?,x\r\n'
    job = preview_job(upload(admin_client, data, corpus=small_corpus.pk, mode="replace"))
    assert (job.preview["removed"], job.preview["unchanged"], job.preview["rejected_count"]) == (0, 2, 1)
    page = admin_client.get(f"/admin/autocomplete/corpus/upload/{job.pk}/preview/").content.decode()
    assert "1 row could not be read, so no pair will be removed; fix them and upload again." in page
    assert "Line 4: a quoted cell starting here is never closed" in page
    job = confirm(admin_client, job)
    assert job.status == "succeeded" and job.report["removed"] == 0 and small_corpus.pairs.count() == 10
    report = admin_client.get(f"/admin/autocomplete/ingestjob/{job.pk}/").content.decode()
    assert "1 row could not be read, so no pair was removed; fix them and upload again." in report


HOSTILE = {
    "deep-json": ("deep.json", b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    "quotes-first-line": ("quotes.csv", b'",' * 500_000 + b"\nA?,a\n", "No question and answer columns"),
    "long-number": ("number.json", b'[{"question": "A?", "answer": ' + b"9" * 5000 + b"}]", "number"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_files_are_a_form_error_within_seconds(admin_client: Client, kind: str) -> None:
    name, data, message = HOSTILE[kind]
    started = time.monotonic()
    response = upload(admin_client, data, name)
    assert time.monotonic() - started < 10  # generous for a loaded machine; the sniffer took minutes
    assert response.status_code == 200
    page = response.content.decode()
    assert message in page and "Nothing was written." in page
    assert not IngestJob.objects.exists() and not Corpus.objects.exists()


TRICKY = ["=SUM(1)", "+1", "-1", "@x", "'quoted", "''twice", "plain text", "'90s", 'a, "quoted" cell']


def test_an_exported_corpus_imports_back_unchanged(admin_client: Client, db: None, minilm) -> None:
    corpus = Corpus.objects.create(name="Tricky", slug="tricky", default_encoder="minilm")
    records = [
        {"id": value if n % 2 else "", "question": f"{value} question {n}?", "answer": value, "tags": f"{value}|b"}
        for n, value in enumerate(TRICKY)
    ]
    ingest_parsed(corpus, parse_qa_file(json.dumps(records).encode(), filename="t.json"), encoder_key="minilm")
    # Leading tabs and carriage returns cannot come in through an upload (cells are stripped) but can
    # be saved another way; they survive the round trip too.
    for n, answer in enumerate(["\tTab start", "\rCR start", "\r\nCRLF start", "=\tmixed"]):
        QAPair.objects.create(corpus=corpus, question=f"Whitespace {n}?", answer=answer, url="https://x.example/=1")
    QAPair.objects.filter(corpus=corpus, question="Whitespace 1?").update(is_featured=True)
    response = admin_client.post(
        "/admin/autocomplete/corpus/", {"action": "export_csv_action", "_selected_action": [corpus.pk]}
    )
    exported = b"".join(response)
    assert b"'=SUM(1)" in exported and b"'''twice" in exported  # neutralised in the file itself
    parsed = parse_qa_file(exported, filename="tricky.csv")
    assert parsed.rejected == [] and len(parsed.rows) == len(TRICKY) + 4
    plan = plan_ingest(corpus, parsed, mode="replace")
    assert (len(plan.to_add), len(plan.to_update), len(plan.to_remove)) == (0, 0, 0)
    report = ingest_parsed(corpus, parsed, mode="replace")
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, len(TRICKY) + 4)
    # The featured mark travels with the file, and a file that gives it sets it back.
    featured = QAPair.objects.filter(corpus=corpus, is_featured=True)
    assert list(featured.values_list("question", flat=True)) == ["Whitespace 1?"]
    QAPair.objects.filter(corpus=corpus).update(is_featured=False)
    ingest_parsed(corpus, parse_qa_file(exported, filename="tricky.csv"), mode="merge")
    assert list(featured.values_list("question", flat=True)) == ["Whitespace 1?"]


# A process that receives an upload over FILE_UPLOAD_MAX_MEMORY_SIZE through Django's own parser and
# upload handlers, and is killed (SIGKILL, as the OOM killer or a worker timeout would) half-way.
KILLED_UPLOAD = r"""
import io, os, signal
import django
django.setup()
from django.test import RequestFactory

boundary = "b0undary"
body = (
    f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="faq.csv"\r\n'
    "Content-Type: text/csv\r\n\r\nquestion,answer\r\n"
).encode() + b"Q?,A\r\n" * 300_000


class KilledMidway(io.RawIOBase):
    def __init__(self):
        self.unsent = io.BytesIO(body)

    def read(self, size=-1):
        chunk = self.unsent.read(size)
        if not chunk:
            os.kill(os.getpid(), signal.SIGKILL)
        return chunk


request = RequestFactory().post(
    "/admin/autocomplete/corpus/upload/",
    CONTENT_TYPE=f"multipart/form-data; boundary={boundary}",
    CONTENT_LENGTH=str(len(body) * 4),
    **{"wsgi.input": KilledMidway()},
)
request.FILES
raise SystemExit("the upload was read to its end without the process being killed")
"""


def test_temp_files_of_a_killed_upload_are_cleaned_up(settings, tmp_path: Path) -> None:
    var = tmp_path / "var"
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings", "AUTOCOMPLETE_VAR_DIR": str(var)}
    root = Path(__file__).resolve().parent.parent
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_UPLOAD], cwd=root, env=environment, capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    # config/settings.py puts Django's upload temp files in the var folder, where the cleanup looks.
    settings.FILE_UPLOAD_TEMP_DIR = str(var / "upload-tmp")
    left = list((var / "upload-tmp").iterdir())
    assert len(left) == 1 and left[0].stat().st_size > 0
    jobs.cleanup_stale_files()
    assert left[0].exists()  # it could still be a request in progress
    stale = time.time() - app_settings().preview_ttl_seconds - 60
    os.utime(left[0], (stale, stale))
    jobs.cleanup_stale_files()
    assert list((var / "upload-tmp").iterdir()) == []


def test_an_api_key_is_shown_once_at_creation_and_stored_hashed(admin_client: Client, small_corpus: Corpus) -> None:
    small_corpus.is_private = True
    small_corpus.save()
    response = admin_client.post("/admin/autocomplete/apikey/add/", {"name": "widget", "corpora": [small_corpus.pk]})
    assert response.status_code == 200
    page = response.content.decode()
    key = page.split('id="api-key" type="text" readonly size="60" value="', 1)[1].split('"', 1)[0]
    assert key.startswith("ac_") and "Copy it now" in page and "shown only this once" in page
    stored = ApiKey.objects.get()
    assert stored.key_sha256 == hashlib.sha256(key.encode()).hexdigest() and key.startswith(stored.prefix)
    assert key not in str(list(ApiKey.objects.values()))
    assert key not in admin_client.get(f"/admin/autocomplete/apikey/{stored.pk}/change/").content.decode()
    answer = admin_client.get("/api/suggest", {"q": "password"}, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert answer.status_code == 200


def test_the_api_key_list_and_the_revoke_action(admin_client: Client, small_corpus: Corpus) -> None:
    api_key = ApiKey.objects.create(name="widget", prefix="ac_abcdef", key_sha256="0" * 64)
    api_key.corpora.set([small_corpus])
    listing = admin_client.get("/admin/autocomplete/apikey/").content.decode()
    for text in ("widget", "ac_abcdef", "small", "Created at", "Last used at", "Revoked"):
        assert text in listing
    response = admin_client.post(
        "/admin/autocomplete/apikey/", {"action": "revoke_action", "_selected_action": [api_key.pk]}, follow=True
    )
    assert "1 key(s) revoked: refused here at once, by every other server within 10 s." in response.content.decode()
    api_key.refresh_from_db()
    assert api_key.is_revoked


def test_the_corpus_admin_shows_and_edits_privacy(admin_client: Client, small_corpus: Corpus) -> None:
    assert "Private" in admin_client.get("/admin/autocomplete/corpus/").content.decode()
    form = admin_client.get(f"/admin/autocomplete/corpus/{small_corpus.pk}/change/").content.decode()
    assert 'name="is_private"' in form


def test_the_corpus_admin_sets_the_no_answer_hand_off_and_refuses_other_schemes(
    admin_client: Client, small_corpus: Corpus
) -> None:
    url = f"/admin/autocomplete/corpus/{small_corpus.pk}/change/"
    fields = {
        "name": small_corpus.name,
        "slug": small_corpus.slug,
        "default_encoder": "minilm",
        # The synonyms inline's management form: without it the page is refused for that alone.
        "synonyms-TOTAL_FORMS": "0",
        "synonyms-INITIAL_FORMS": "0",
    }
    text = "Can't find it? Write to our support team."
    for refused in ("javascript:alert(1)", "ftp://example.com/contact", "data:text/html,<b>x</b>"):
        response = admin_client.post(url, {**fields, "handoff_text": text, "handoff_url": refused})
        assert response.status_code == 200 and "errorlist" in response.content.decode(), refused
        small_corpus.refresh_from_db()
        assert small_corpus.handoff_url == ""
    response = admin_client.post(url, {**fields, "handoff_text": text, "handoff_url": "https://example.com/contact"})
    assert response.status_code == 302
    small_corpus.refresh_from_db()
    assert (small_corpus.handoff_text, small_corpus.handoff_url) == (text, "https://example.com/contact")


# --- the owner's controls (autocomplete/controls.py) ----------------------------------------------


def test_synonyms_import_from_csv_apply_at_once_and_export_back(admin_client: Client, db: None, minilm) -> None:
    from .test_controls import tagged_csv

    corpus = Corpus.objects.create(name="Tagged", slug="tagged", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(tagged_csv(), filename="faq.csv"), encoder_key="minilm")
    Synonym.objects.create(corpus=corpus, terms="old, older")
    before = admin_client.get("/api/suggest", {"q": "receipts", "corpus": "tagged"}).json()["suggestions"]
    assert all(s["question"] != "Where can I download my invoices?" for s in before)
    data = b'terms,one_way_to\r\n"invoices, receipts",\r\nphone,mobile\r\n'
    response = admin_client.post(
        "/admin/autocomplete/synonym/import/",
        {"corpus": corpus.pk, "replace": "on", "file": SimpleUploadedFile("s.csv", data, "text/csv")},
    )
    assert response.status_code == 302
    assert sorted(corpus.synonyms.values_list("terms", "one_way_to")) == [
        ("invoices, receipts", ""),
        ("phone", "mobile"),
    ]
    after = admin_client.get("/api/suggest", {"q": "receipts", "corpus": "tagged"}).json()["suggestions"]
    assert after[0]["question"] == "Where can I download my invoices?"
    exported = admin_client.post(
        "/admin/autocomplete/synonym/",
        {"action": "export_csv_action", "_selected_action": list(corpus.synonyms.values_list("pk", flat=True))},
    )
    assert exported["Content-Type"].startswith("text/csv")
    assert exported.content.decode() == 'terms,one_way_to\r\n"invoices, receipts",\r\nphone,mobile\r\n'


def test_a_bad_synonyms_file_writes_nothing_and_says_why(admin_client: Client, db: None) -> None:
    corpus = Corpus.objects.create(name="X", slug="x", default_encoder="minilm")
    response = admin_client.post(
        "/admin/autocomplete/synonym/import/",
        {"corpus": corpus.pk, "file": SimpleUploadedFile("s.csv", b"words\nwifi\n", "text/csv")},
    )
    assert response.status_code == 200
    assert "needs a header row with a &#x27;terms&#x27; column" in response.content.decode()
    assert not Synonym.objects.exists()


def test_a_rule_made_in_the_admin_pins_at_once_and_refuses_other_corpora_pairs(
    admin_client: Client, small_corpus: Corpus
) -> None:
    other = Corpus.objects.create(name="Other", slug="other", default_encoder="minilm")
    stranger = QAPair.objects.create(corpus=other, question="Not here?", answer="No.")
    app = QAPair.objects.get(corpus=small_corpus, question="Is there a mobile app?")
    form = {
        "corpus": small_corpus.pk,
        "match": "prefix",
        "text": "How do",
        "answers-TOTAL_FORMS": "1",
        "answers-INITIAL_FORMS": "0",
        "answers-0-pair": stranger.pk,
        "answers-0-action": "pin",
        "answers-0-position": "1",
    }
    refused = admin_client.post("/admin/autocomplete/rule/add/", form)
    assert refused.status_code == 200 and "This pair belongs to another corpus" in refused.content.decode()
    assert not Rule.objects.exists()
    bad_dates = form | {"answers-0-pair": app.pk, "starts_at_0": "2026-01-02", "starts_at_1": "00:00:00"}
    bad_dates |= {"ends_at_0": "2026-01-01", "ends_at_1": "00:00:00"}
    assert (
        "The end must come after the start."
        in admin_client.post("/admin/autocomplete/rule/add/", bad_dates).content.decode()
    )
    assert admin_client.post("/admin/autocomplete/rule/add/", form | {"answers-0-pair": app.pk}).status_code == 302
    first = admin_client.get("/api/suggest", {"q": "how do i reset", "corpus": "small"}).json()["suggestions"][0]
    assert (first["question"], first["pinned"]) == ("Is there a mobile app?", True)
    listed = admin_client.get("/admin/autocomplete/rule/").content.decode()
    assert "1 pinned, 0 hidden" in listed


def test_controls_export_with_the_corpus(admin_client: Client, small_corpus: Corpus) -> None:
    Synonym.objects.create(corpus=small_corpus, terms="app, application")
    rule = Rule.objects.create(corpus=small_corpus, text="refund", match="contains")
    app = QAPair.objects.get(corpus=small_corpus, question="Is there a mobile app?")
    RuleAnswer.objects.create(rule=rule, pair=app, action="hide")
    response = admin_client.post(
        "/admin/autocomplete/corpus/", {"action": "export_controls_action", "_selected_action": [small_corpus.pk]}
    )
    assert response["Content-Disposition"] == 'attachment; filename="small-controls.json"'
    assert json.loads(response.content) == {
        "format": 1,
        "corpus": "small",
        "synonyms": [{"terms": "app, application", "one_way_to": ""}],
        "rules": [
            {
                "match": "contains",
                "text": "refund",
                "starts_at": None,
                "ends_at": None,
                "answers": [{"action": "hide", "position": 1, "id": "", "question": "Is there a mobile app?"}],
            }
        ],
    }


def test_a_controls_export_imports_into_another_corpus(admin_client: Client, small_corpus: Corpus) -> None:
    Synonym.objects.create(corpus=small_corpus, terms="app, application")
    rule = Rule.objects.create(corpus=small_corpus, text="refund", match="contains")
    for question, action in (("Is there a mobile app?", "pin"), ("How do I delete my account?", "hide")):
        RuleAnswer.objects.create(
            rule=rule, pair=QAPair.objects.get(corpus=small_corpus, question=question), action=action
        )
    exported = admin_client.post(
        "/admin/autocomplete/corpus/", {"action": "export_controls_action", "_selected_action": [small_corpus.pk]}
    ).content
    copy = Corpus.objects.create(name="Copy", slug="copy", default_encoder="minilm")
    QAPair.objects.create(corpus=copy, question="IS THERE A MOBILE APP", answer="Yes.")
    response = admin_client.post(
        "/admin/autocomplete/rule/import/",
        {"corpus": copy.pk, "file": SimpleUploadedFile("c.json", exported, "application/json")},
        follow=True,
    )
    page = response.content.decode()
    assert "1 synonym entries and 1 rules imported into copy." in page
    assert "1 answers name questions copy lacks: How do I delete my account?" in page
    (imported,) = copy.rules.all()
    assert [(a.pair.question, a.action) for a in imported.answers.all()] == [("IS THERE A MOBILE APP", "pin")]
    assert list(copy.synonyms.values_list("terms", flat=True)) == ["app, application"]
    refused = admin_client.post(
        "/admin/autocomplete/rule/import/",
        {"corpus": copy.pk, "file": SimpleUploadedFile("c.json", b'{"format": 9}', "application/json")},
    )
    assert (
        "This is not a controls export of format 1: export it again. Nothing was written." in refused.content.decode()
    )
    assert copy.rules.count() == 1
