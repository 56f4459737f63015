"""Content gaps: CSV input, wordings merged, grouping in the background task with the corpus's encoder,
the admin page (groups, nearest question, Create QA pair prefilled), the command and recorded failures."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime, time
from html import unescape
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from autocomplete import gaps
from autocomplete.models import AnalysisStatus, ContentGap, Corpus, SearchEvent

from .test_query_groups import PARAPHRASES

pytestmark = pytest.mark.django_db

RANGE = {"start": "2026-11-01", "end": "2026-11-30"}


def paraphrase_csv(counts: dict[str, int] | None = None) -> bytes:
    rows = ["query,count"] + [
        f'"{text}",{(counts or {}).get(text, 1)}' for group in PARAPHRASES.values() for text in group
    ]
    return "\n".join(rows).encode()


def test_csv_reading_with_and_without_header_and_clear_errors() -> None:
    assert gaps.read_query_counts(b"count,query\n3,refund please\n,where is my parcel\n") == [
        ("refund please", 3),
        ("where is my parcel", 1),
    ]
    assert gaps.read_query_counts(b"\xef\xbb\xbfrefund please,2\n\nparcel\n") == [("refund please", 2), ("parcel", 1)]
    with pytest.raises(gaps.GapInputError, match=r"Line 3: the count '-1' is not a whole number of 1 or more"):
        gaps.read_query_counts(b"query,count\nok,1\nbad,-1\n")
    with pytest.raises(gaps.GapInputError, match="not UTF-8"):
        gaps.read_query_counts("café,1".encode("latin-1"))
    with pytest.raises(gaps.GapInputError, match="holds no queries"):
        gaps.read_query_counts(b"query,count\n")


def test_wordings_differing_in_case_or_spacing_count_as_one() -> None:
    merged = gaps.merge_wordings([("Refund  please", 1), ("refund please", 3), ("  ", 5), ("parcel", 2)])
    assert merged == [("refund please", 4), ("parcel", 2)]


def test_admin_import_groups_in_the_task_and_the_page_links_to_a_prefilled_add_form(
    small_corpus: Corpus, admin_client: Client
) -> None:
    url = f"/admin/autocomplete/corpus/{small_corpus.pk}/gaps/"
    assert "No content gaps computed for this corpus yet." in admin_client.get(url).content.decode()
    upload = SimpleUploadedFile("support.csv", paraphrase_csv({"forgot my password": 30}))
    response = admin_client.post(url, {**RANGE, "file": upload})
    assert response.status_code == 302
    report = ContentGap.objects.get(corpus=small_corpus)
    assert (report.status, report.start, report.end, report.encoder) == (
        "done",
        date(2026, 11, 1),
        date(2026, 11, 30),
        "minilm",
    )
    assert len(report.groups) == len(PARAPHRASES)
    password = report.groups[0]  # 30 + 3 searches: the largest group
    assert password["size"] == 33 and set(password["examples"]) == set(PARAPHRASES["password"])
    assert password["nearest_question"] == "How do I reset my password?"

    page = unescape(admin_client.get(response["Location"]).content.decode())
    assert "20 distinct queries, 49 searches" in page
    for group in report.groups:
        assert group["typical"] in page
    create = re.search(r'href="([^"]+)">Create QA pair', page)
    assert create is not None
    form = admin_client.get(create.group(1)).content.decode()
    question = re.search(r'<textarea name="question"[^>]*>\s*(.*?)</textarea>', form, re.S)
    assert question is not None and unescape(question.group(1)) == password["typical"]
    assert re.search(rf'<option value="{small_corpus.pk}" selected>', form)


def test_groups_cover_every_query_once_and_recover_the_paraphrase_groups(small_corpus: Corpus) -> None:
    report = gaps.request_gaps(
        small_corpus,
        start=date(2026, 11, 1),
        end=date(2026, 11, 30),
        queries=gaps.read_query_counts(paraphrase_csv()),
        source="test",
    )
    assert report.status == AnalysisStatus.DONE
    found = {frozenset(group["examples"]) for group in report.groups}
    assert found == {frozenset(group[:5]) for group in PARAPHRASES.values()}


def test_a_bad_file_is_refused_on_the_form_and_viewers_cannot_import(
    small_corpus: Corpus, admin_client: Client, configure
) -> None:
    url = f"/admin/autocomplete/corpus/{small_corpus.pk}/gaps/"
    response = admin_client.post(url, {**RANGE, "file": SimpleUploadedFile("log.csv", b"query,count\nrefund,many\n")})
    assert response.status_code == 200
    assert "Line 2: the count" in unescape(response.content.decode()) and not ContentGap.objects.exists()
    configure(MAX_UPLOAD_BYTES=10)
    large = admin_client.post(url, {**RANGE, "file": SimpleUploadedFile("log.csv", b"query\nforgot my password\n")})
    assert "the limit is 10 (AUTOCOMPLETE_MAX_UPLOAD_BYTES)" in large.content.decode()
    configure(MAX_UPLOAD_BYTES=50_000_000)
    swapped = admin_client.post(
        url, {"start": "2026-12-01", "end": "2026-11-01", "file": SimpleUploadedFile("a.csv", b"x")}
    )
    assert "swap the dates" in swapped.content.decode()
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_corpus"))
    client = Client()
    client.force_login(viewer)
    assert client.get(url).status_code == 200
    assert client.post(url, {**RANGE, "file": SimpleUploadedFile("a.csv", b"refund,1")}).status_code == 403


def test_command_groups_a_csv_and_reports_errors(small_corpus: Corpus, tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(paraphrase_csv())
    out = StringIO()
    call_command("gaps", "small", "--csv", str(path), "--start", "2026-11-01", "--end", "2026-11-30", stdout=out)
    assert out.getvalue().startswith(
        f"small 2026-11-01..2026-11-30: 20 distinct queries (20 searches) in {len(PARAPHRASES)} groups"
    )
    assert "[nearest: How do I reset my password?]" in out.getvalue()
    with pytest.raises(CommandError, match="Unknown corpus"):
        call_command("gaps", "nope", "--csv", str(path))
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("gaps", "small", "--csv", str(tmp_path / "missing.csv"))
    with pytest.raises(CommandError, match="swap the dates"):
        call_command("gaps", "small", "--csv", str(path), "--start", "2026-12-01", "--end", "2026-11-01")


def test_a_failure_is_recorded_and_the_previous_groups_kept(minilm) -> None:
    corpus = Corpus.objects.create(name="New", slug="new", default_encoder="minilm")  # not indexed yet
    queries = [("refund please", 2), ("where is my parcel", 1)]
    first = gaps.gaps_now(corpus, start=date(2026, 11, 1), end=date(2026, 11, 30), queries=queries, source="a")
    assert first.status == AnalysisStatus.DONE and len(first.groups) == 2
    assert first.groups[0]["nearest_question"] is None  # no index to compare with, groups all the same
    Corpus.objects.filter(pk=corpus.pk).update(default_encoder="retired")
    corpus.refresh_from_db()
    failed = gaps.gaps_now(corpus, start=date(2026, 11, 1), end=date(2026, 11, 30), queries=queries, source="b")
    assert failed.status == AnalysisStatus.FAILED and "retired" in failed.error and "run it again" in failed.error
    assert failed.groups == first.groups


def test_the_request_only_queues_and_a_worker_groups(small_corpus: Corpus, admin_client: Client, settings) -> None:
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    url = f"/admin/autocomplete/corpus/{small_corpus.pk}/gaps/"
    upload = SimpleUploadedFile("log.csv", b"query,count\nforgot my password,3\nreset my password please,2\n")
    assert admin_client.post(url, {**RANGE, "file": upload}).status_code == 302
    report = ContentGap.objects.get(corpus=small_corpus)
    assert report.status == AnalysisStatus.QUEUED and report.groups == []
    assert "Queued" in admin_client.get(url).content.decode()
    # What a worker does with the stored task (the real worker closes this test's connection).
    queued = DBTaskResult.objects.get()
    assert queued.task.name == "compute_gaps_task"
    queued.task.call(*queued.args_kwargs["args"], **queued.args_kwargs["kwargs"])
    report.refresh_from_db()
    assert report.status == AnalysisStatus.DONE and [group["size"] for group in report.groups] == [5]


def _settled(corpus: Corpus, text: str, day: date, *, shown: list[int], chosen: int | None = None) -> None:
    SearchEvent.objects.create(
        corpus=corpus,
        encoder="minilm",
        page_view=uuid.uuid4().hex,
        query=text,
        shown_ids=shown,
        shown_count=len(shown),
        chosen_pair_id=chosen,
        chosen_position=1 if chosen else None,
        trigger="choice" if chosen else "pause",
        created_at=timezone.make_aware(datetime.combine(day, time(12))),
    )


def test_the_sites_unanswered_searches_are_grouped_from_the_admin_and_the_command(
    small_corpus: Corpus, admin_client: Client
) -> None:
    pair = small_corpus.pairs.first()
    assert pair is not None
    inside, outside = date(2026, 11, 10), date(2026, 10, 1)
    for text in PARAPHRASES["password"]:
        _settled(small_corpus, text, inside, shown=[])  # no suggestion: a gap
    _settled(small_corpus, "forgot my password", inside, shown=[pair.pk])  # shown, not chosen: a gap
    _settled(small_corpus, "chosen, so answered", inside, shown=[pair.pk], chosen=pair.pk)
    _settled(small_corpus, "searched before the range", outside, shown=[])

    url = f"/admin/autocomplete/corpus/{small_corpus.pk}/gaps/"
    response = admin_client.post(
        url, {"from_events": "1", "searched-start": "2026-11-01", "searched-end": "2026-11-30"}
    )
    assert response.status_code == 302
    report = ContentGap.objects.get(corpus=small_corpus, start=date(2026, 11, 1))
    assert (report.status, report.source) == (AnalysisStatus.DONE, "search events")
    grouped = {text for group in report.groups for text in group["examples"]}
    assert grouped == {*PARAPHRASES["password"], "forgot my password"}
    assert len(report.groups) == 1 and report.groups[0]["size"] == len(PARAPHRASES["password"]) + 1

    out = StringIO()
    call_command("gaps", "small", "--start", "2026-09-01", "--end", "2026-11-30", stdout=out)
    assert f"({len(PARAPHRASES['password']) + 2} searches) in 2 groups" in out.getvalue()
