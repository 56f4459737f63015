"""The reachability audit through the served ranking: a pair reached only from its whole question and a
shadowed pair are reported, worst first, and well-worded pairs are not; task, command and admin page."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django_tasks_db.models import DBTaskResult

from autocomplete import reachability
from autocomplete.ingest import ingest_parsed
from autocomplete.models import AnalysisStatus, Corpus, QAPair, ReachabilityAudit
from autocomplete.parsing import parse_qa_file
from autocomplete.search import served_space

from .conftest import SMALL_FAQ, faq_csv

pytestmark = pytest.mark.django_db

SHADOWED = SMALL_FAQ[0][0]  # "How do I reset my password?"
SHADOW = "How can I reset my password?"
# Questions that differ only in their last word: typed up to three quarters they tie with each other,
# so with more of them than places in the top 5 some are offered only once the whole question is typed.
SIBLINGS = [
    f"How do I set up the printer in the {place} office?"
    for place in ("Paris", "Lyon", "Nice", "Lille", "Metz", "Brest", "Dijon", "Nancy")
]
WELL_WORDED = [question for question, _ in SMALL_FAQ[1:]]


@pytest.fixture
def audited_corpus(minilm) -> Corpus:
    corpus = Corpus.objects.create(name="Audit", slug="audit", default_encoder="minilm")
    pairs = [*SMALL_FAQ, (SHADOW, "Use the sign-in page."), *((q, "Ask the office manager.") for q in SIBLINGS)]
    ingest_parsed(corpus, parse_qa_file(faq_csv(pairs), filename="faq.csv"), encoder_key="minilm")
    return corpus


def test_audit_flags_late_and_shadowed_pairs_and_not_well_worded_ones(audited_corpus: Corpus) -> None:
    served = served_space("audit")
    options = reachability.AuditOptions()
    reaches = {r.question: r for r in reachability.audit_space(served.space, served.queries, options)}
    flagged = {q for q, r in reaches.items() if r.is_flagged(options)}
    shadow_of = {q: r.shadowed_by[1] if r.shadowed_by else None for q, r in reaches.items()}
    assert shadow_of[SHADOW] == SHADOWED and shadow_of[SHADOWED] == SHADOW
    late = [q for q in SIBLINGS if reaches[q].reach is None or reaches[q].reach == 1.0]
    assert late and set(late) <= flagged
    assert not flagged & set(WELL_WORDED)
    assert flagged <= {SHADOW, SHADOWED, *SIBLINGS}


def test_the_task_stores_findings_worst_first_and_the_admin_lists_them_with_edit_links(
    audited_corpus: Corpus, admin_client: Client
) -> None:
    url = f"/admin/autocomplete/corpus/{audited_corpus.pk}/reachability/"
    assert "No audit yet." in admin_client.get(url).content.decode()
    response = admin_client.post(url)  # queued; the test settings' immediate backend runs it at once
    assert response.status_code == 302
    audit = ReachabilityAudit.objects.get(corpus=audited_corpus)
    assert audit.status == AnalysisStatus.DONE and audit.encoder == "minilm" and audit.pair_count == 19
    reaches = [finding["reach"] for finding in audit.findings]
    assert reaches[0] is None or reaches[0] == 1.0  # the worst first
    assert {finding["question"] for finding in audit.findings} >= {SHADOW, SHADOWED}
    page = admin_client.get(url).content.decode()
    assert f"{len(audit.findings)} of 19 pairs listed" in page
    first = QAPair.objects.get(pk=audit.findings[0]["id"])
    edit = f'href="/admin/autocomplete/qapair/{first.pk}/change/"'
    assert edit in page and page.index(edit) < page.index(
        f"/admin/autocomplete/qapair/{QAPair.objects.get(question=SHADOW).pk}/change/"
    )
    assert "75 %: —" in page  # the worst pair is not in the top 5 at three quarters of its question
    corpus_page = admin_client.get(f"/admin/autocomplete/corpus/{audited_corpus.pk}/change/").content.decode()
    assert url in corpus_page and f"/admin/autocomplete/corpus/{audited_corpus.pk}/gaps/" in corpus_page


def test_viewers_see_the_audit_but_only_editors_queue_one(audited_corpus: Corpus) -> None:
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_corpus"))
    client = Client()
    client.force_login(viewer)
    url = f"/admin/autocomplete/corpus/{audited_corpus.pk}/reachability/"
    page = client.get(url)
    assert page.status_code == 200 and "Audit in the background" not in page.content.decode()
    assert client.post(url).status_code == 403
    assert not ReachabilityAudit.objects.exists()


def test_command_audits_prints_and_stores(audited_corpus: Corpus) -> None:
    out = StringIO()
    call_command("audit_reachability", "audit", stdout=out)
    text = out.getvalue()
    audit = ReachabilityAudit.objects.get(corpus=audited_corpus)
    assert text.startswith(f"audit/minilm: {len(audit.findings)} of 19 pairs listed")
    assert f"shadowed by #{QAPair.objects.get(question=SHADOW).pk}" in text
    with pytest.raises(CommandError, match="Unknown corpus"):
        call_command("audit_reachability", "nope")
    Corpus.objects.create(name="Empty", slug="empty", default_encoder="minilm")
    with pytest.raises(CommandError, match="no index yet.*Index the corpus first"):
        call_command("audit_reachability", "empty")


def test_the_request_only_queues_and_a_worker_audits(audited_corpus: Corpus, admin_client: Client, settings) -> None:
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    url = f"/admin/autocomplete/corpus/{audited_corpus.pk}/reachability/"
    assert admin_client.post(url).status_code == 302
    audit = ReachabilityAudit.objects.get(corpus=audited_corpus)
    assert audit.status == AnalysisStatus.QUEUED and audit.findings == []
    assert "Queued" in admin_client.get(url).content.decode()
    # What a worker does with the stored task (the real worker closes this test's connection).
    queued = DBTaskResult.objects.get()
    assert queued.task.name == "run_audit_task"
    queued.task.call(*queued.args_kwargs["args"], **queued.args_kwargs["kwargs"])
    audit.refresh_from_db()
    assert audit.status == AnalysisStatus.DONE and audit.pair_count == 19 and audit.findings
