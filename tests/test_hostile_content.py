"""Hostile content renders inert: markup in questions, answers, urls, corpus and file names stays text,
and only http(s) links are ever rendered, on the page, the partial, the JSON and the admin."""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils.html import escape

from autocomplete import search
from autocomplete.ingest import ingest_parsed
from autocomplete.links import link_url
from autocomplete.models import Corpus, IngestJob, QAPair
from autocomplete.parsing import parse_qa_file

pytestmark = pytest.mark.django_db

# Each payload would set window.__xss (or open a dialog) if it ever ran.
SCRIPT = "<script>window.__xss=1;alert(1)</script>"
IMG = "<img src=x onerror=window.__xss=1>"
BREAK_DOUBLE = '" onmouseover="window.__xss=1'
BREAK_SINGLE = "' onfocus='window.__xss=1"
PAYLOADS = [SCRIPT, IMG, BREAK_DOUBLE, BREAK_SINGLE]
HOSTILE = "".join(PAYLOADS)
HTTPS_WITH_MARKUP = 'https://example.com/app?a=1&b="><script>window.__xss=1</script>'

# Question, answer, and a url stored as the admin's URL field or a database edit could store it.
HOSTILE_PAIRS = [
    (f"How do I reset my password? {SCRIPT}", f"Use the link.\n\n{IMG}", "javascript:window.__xss=1"),
    (f"Where can I download my invoices? {IMG}", f"Under Billing. {SCRIPT}", "data:text/html,<b>x</b>"),
    (f"Can I export my data as CSV? {BREAK_DOUBLE}", f"Yes. {BREAK_SINGLE}", "ftp://example.com/export.csv"),
    (f"How do I contact support? {BREAK_SINGLE}", f"Write to us. {BREAK_DOUBLE}", " JaVaScRiPt:window.__xss=1"),
    ("Is there a mobile app?", "Yes, for iOS and Android.", HTTPS_WITH_MARKUP),
]
NOT_HTTP = [url for _, _, url in HOSTILE_PAIRS if url is not HTTPS_WITH_MARKUP]


def hostile_csv(pairs: list[tuple[str, str, str]] = HOSTILE_PAIRS) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["question", "answer"])
    writer.writerows((question, answer) for question, answer, _ in pairs)
    return out.getvalue().encode()


@pytest.fixture
def hostile_corpus(db: None, minilm: object) -> Corpus:
    """An indexed corpus whose every text is hostile, with links of every scheme, and a second corpus
    whose slug (a database edit) is hostile too, so that the page shows a selector."""
    corpus = Corpus.objects.create(name=f"Help {HOSTILE}", slug="hostile", default_encoder="minilm")
    ingest_parsed(corpus, parse_qa_file(hostile_csv(), filename="hostile.csv"), encoder_key="minilm")
    for question, _, url in HOSTILE_PAIRS:
        QAPair.objects.filter(corpus=corpus, question=question).update(url=url)
    Corpus.objects.create(name=HOSTILE, slug='x"><script>window.__xss=1</script>', default_encoder="minilm")
    search.forget_loaded()
    return corpus


class _Inspector(HTMLParser):
    """Collects what a browser would run or follow: elements, attributes, script bodies, links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self.links: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            value = value or ""
            if "__xss" in name or name in ("onmouseover", "onfocus", "onerror"):
                self.problems.append(f"<{tag}> has the attribute {name}={value!r}")
            if name.startswith("on") and "__xss" in value:
                self.problems.append(f"<{tag} {name}> runs {value!r}")
            if name in ("href", "src", "action", "formaction", "xlink:href"):
                self.links.append(value)
                if urlsplit(value.strip()).scheme.lower() not in ("", "http", "https"):
                    self.problems.append(f"<{tag} {name}={value!r}> is not an http(s) or relative link")
        source = dict(attrs).get("src") or "/static/"
        if tag in ("img", "iframe", "object", "embed") and not source.startswith("/static/"):
            self.problems.append(f"<{tag}> loads {source!r}")
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and "__xss" in data:
            self.problems.append(f"a script runs {data!r}")


def assert_inert(html: str) -> list[str]:
    """No payload as markup, nothing that runs it, only http(s) or relative links; returns the links."""
    for payload in PAYLOADS:
        assert payload not in html, f"{payload!r} is in the page unescaped"
    inspector = _Inspector()
    inspector.feed(html)
    inspector.close()
    assert inspector.problems == []
    return inspector.links


def page(client: Client, path: str, **params: str) -> str:
    response = client.get(path, params)
    assert response.status_code == 200, (path, response.status_code)
    assert response["Content-Type"].startswith("text/html")
    return response.content.decode()


@pytest.mark.parametrize(
    ("value", "link"),
    [
        ("https://example.com/a?b=1", "https://example.com/a?b=1"),
        ("HTTP://example.com", "HTTP://example.com"),
        ("javascript:alert(1)", ""),
        ("JaVaScRiPt:alert(1)", ""),
        (" https://example.com", ""),
        ("\x01javascript:alert(1)", ""),
        ("data:text/html,<script>alert(1)</script>", ""),
        ("ftp://example.com/file", ""),
        ("//evil.example.com", ""),
        ("/relative", ""),
        ("", ""),
    ],
)
def test_only_http_urls_become_links(value: str, link: str) -> None:
    assert link_url(value) == link


def test_search_page_results_without_javascript(client: Client, hostile_corpus: Corpus) -> None:
    for question, _, _ in HOSTILE_PAIRS:
        html = page(client, "/", q=question[:40], corpus="hostile", k="10")
        # The content is there, as text (with the words that match marked: the only tags in it).
        assert escape(question) in html.replace("<mark>", "").replace("</mark>", "")
        links = assert_inert(html)
        assert not any(url.strip() in links for url in NOT_HTTP)
    assert HTTPS_WITH_MARKUP in assert_inert(page(client, "/", q="mobile app", corpus="hostile"))


def test_search_page_with_a_hostile_query_and_corpus_names(client: Client, hostile_corpus: Corpus) -> None:
    html = page(client, "/", q=HOSTILE, corpus="hostile")
    assert escape(f"Help {HOSTILE}") in html
    assert_inert(html)


def test_partial(client: Client, hostile_corpus: Corpus) -> None:
    for q in ("reset password", "invoices", "export csv", "contact support", "mobile app", HOSTILE):
        response = client.get("/suggest", {"q": q, "corpus": "hostile", "k": "10"}, headers={"HX-Request": "true"})
        assert response.status_code == 200
        html = response.content.decode()
        assert_inert(html)
        assert 'class="answer-url"' not in html or escape(HTTPS_WITH_MARKUP) in html
        assert not any(escape(url) in html for url in NOT_HTTP)


def test_json_stays_data(client: Client, hostile_corpus: Corpus) -> None:
    for question, answer, url in HOSTILE_PAIRS:
        response = client.get("/api/suggest", {"q": question[:40], "corpus": "hostile"})
        assert response.status_code == 200 and response["Content-Type"] == "application/json"
        assert b"<" not in response.content and b">" not in response.content
        first = response.json()["suggestions"][0]
        # The exact texts, markup and all, as data; a link only when it is http(s).
        assert (first["question"], first["answer"], first.get("url")) == (question, answer, link_url(url) or None)
    error = client.get("/api/suggest", {"q": "x", "corpus": "hostile", "encoder": HOSTILE[:50]})
    assert error.status_code == 400 and error["Content-Type"] == "application/json"
    assert b"<" not in error.content and HOSTILE[:50] in error.json()["error"]


@pytest.fixture
def uploaded_job(admin_client: Client, hostile_corpus: Corpus, configure: object, tmp_path: Path) -> IngestJob:
    """An upload of hostile rows under a hostile file name, previewed but not confirmed."""
    configure(UPLOAD_DIR=tmp_path / "uploads")  # type: ignore[operator]
    rows = [(f"{question} (again)", answer, "") for question, answer, _ in HOSTILE_PAIRS]
    # Multipart parsing keeps what follows the last "/" of a file name: this one has none.
    upload = SimpleUploadedFile(f"{IMG}{BREAK_SINGLE}.csv", hostile_csv(rows))
    response = admin_client.post(
        "/admin/autocomplete/corpus/upload/",
        {"file": upload, "new_corpus_name": HOSTILE[:200], "new_corpus_slug": "hostile-upload", "encoders": ["minilm"]}
        | {"mode": "merge"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    job = IngestJob.objects.get(status=IngestJob.Status.PREVIEW)
    assert job.original_name == f"{IMG}{BREAK_SINGLE}.csv"
    return job


def test_admin_upload_preview_and_job_pages(admin_client: Client, uploaded_job: IngestJob) -> None:
    preview = page(admin_client, f"/admin/autocomplete/corpus/upload/{uploaded_job.pk}/preview/")
    assert escape(uploaded_job.original_name) in preview
    assert escape(HOSTILE_PAIRS[0][0]) in preview
    assert_inert(preview)
    response = admin_client.post(f"/admin/autocomplete/corpus/upload/{uploaded_job.pk}/preview/", {"confirm": "1"})
    assert response.status_code == 302
    uploaded_job.refresh_from_db()
    assert uploaded_job.status == "succeeded", uploaded_job.error
    # A name no multipart upload can carry ("/" and both quotes), as a database edit could store it.
    IngestJob.objects.filter(pk=uploaded_job.pk).update(original_name=HOSTILE)
    job_page = page(admin_client, f"/admin/autocomplete/ingestjob/{uploaded_job.pk}/")
    assert escape(HOSTILE) in job_page
    assert_inert(job_page)
    assert_inert(page(admin_client, f"/admin/autocomplete/ingestjob/{uploaded_job.pk}/progress/"))
    assert_inert(page(admin_client, "/admin/autocomplete/ingestjob/"))
    corpus = Corpus.objects.get(slug="hostile-upload")
    assert escape(HOSTILE) in assert_inert_page(admin_client, f"/admin/autocomplete/corpus/{corpus.pk}/change/")


def assert_inert_page(client: Client, path: str) -> str:
    html = page(client, path)
    assert_inert(html)
    return html


def test_admin_cancelled_upload_message(admin_client: Client, uploaded_job: IngestJob) -> None:
    response = admin_client.post(
        f"/admin/autocomplete/corpus/upload/{uploaded_job.pk}/preview/", {"cancel": "1"}, follow=True
    )
    html = response.content.decode()
    assert "cancelled; nothing was written" in html
    assert_inert(html)


def test_admin_corpus_and_pair_pages(admin_client: Client, hostile_corpus: Corpus) -> None:
    assert escape(HOSTILE) in assert_inert_page(admin_client, "/admin/autocomplete/corpus/")
    for corpus in Corpus.objects.all():
        assert_inert_page(admin_client, f"/admin/autocomplete/corpus/{corpus.pk}/change/")
    assert escape(SCRIPT) in assert_inert_page(admin_client, "/admin/autocomplete/qapair/")
    for pair in QAPair.objects.filter(corpus=hostile_corpus):
        html = assert_inert_page(admin_client, f"/admin/autocomplete/qapair/{pair.pk}/change/")
        # Django's URL widget shows "Currently: <a href=...>" above the field for a url it links.
        assert ('<p class="url">' in html) == (pair.url == HTTPS_WITH_MARKUP), pair.url


def test_admin_pair_form_refuses_links_that_are_not_http(admin_client: Client, hostile_corpus: Corpus) -> None:
    pair = QAPair.objects.get(corpus=hostile_corpus, question="Is there a mobile app?")
    form = {"corpus": hostile_corpus.pk, "question": pair.question, "answer": pair.answer, "tags": ""}
    # The keys inline's management form: without it the page is refused for that alone.
    form |= {"keys-TOTAL_FORMS": "0", "keys-INITIAL_FORMS": "0"}
    for url in ("ftp://example.com/file", "javascript:alert(1)"):
        response = admin_client.post(f"/admin/autocomplete/qapair/{pair.pk}/change/", form | {"url": url})
        assert response.status_code == 200 and "Enter a valid URL." in response.content.decode()
    response = admin_client.post(
        f"/admin/autocomplete/qapair/{pair.pk}/change/", form | {"url": "https://example.com/app"}
    )
    assert response.status_code == 302
