"""The JSON endpoint's contract, the HTMX partial and the no-JavaScript page."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection
from django.test import Client

from autocomplete.catalog import invalidate_catalog
from autocomplete.conf import app_settings
from autocomplete.encoder_registry import encoder_registry
from autocomplete.ingest import ingest_parsed
from autocomplete.models import Corpus, IndexBuild
from autocomplete.parsing import parse_qa_file
from autocomplete.search import SearchSpace, forget_loaded, rank
from embeddings.encoders import EncoderUnavailableError
from embeddings.vector_index import VectorIndex

from .conftest import faq_csv
from .mounted_urls import SITE_MIDDLEWARE

pytestmark = pytest.mark.django_db


def test_json_shape_and_relevance(client: Client, small_corpus: Corpus) -> None:
    response = client.get("/api/suggest", {"q": "how do i cancel my sub", "k": "3"})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"query", "corpus", "encoder", "suggestions", "took_ms"}
    assert (body["query"], body["corpus"], body["encoder"]) == ("how do i cancel my sub", "small", "minilm")
    assert isinstance(body["took_ms"], float)
    assert len(body["suggestions"]) == 3
    first = body["suggestions"][0]
    assert set(first) == {"id", "question", "answer", "score"}
    assert first["question"] == "How do I cancel my subscription?"
    scores = [s["score"] for s in body["suggestions"]]
    assert scores == sorted(scores, reverse=True)


def test_highlight_offsets_are_given_only_when_asked(client: Client, small_corpus: Corpus) -> None:
    params = {"q": "how do I cancel my sub", "k": "2"}
    plain = client.get("/api/suggest", params).json()
    assert all("highlight" not in s for s in plain["suggestions"])
    for off in ("0", ""):
        assert client.get("/api/suggest", {**params, "highlight": off}).json()["suggestions"] == plain["suggestions"]
    body = client.get("/api/suggest", {**params, "highlight": "1"}).json()
    first = body["suggestions"][0]
    assert first["question"] == "How do I cancel my subscription?"
    assert first["highlight"] == [[0, 3], [4, 6], [7, 8], [9, 15], [16, 18], [19, 22]]
    assert [first["question"][a:b] for a, b in first["highlight"]][-1] == "sub"
    response = client.get("/api/suggest", {**params, "highlight": "yes"})
    assert response.status_code == 400 and response.json()["error"].startswith("highlight: Select a valid choice.")


def test_empty_query_never_touches_the_encoder(
    client: Client, small_corpus: Corpus, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(key: str) -> None:
        raise AssertionError("encoder used for an empty query")

    monkeypatch.setattr(encoder_registry(), "get", refuse)
    for q in ("", "   ", "\t"):
        response = client.get("/api/suggest", {"q": q})
        assert response.status_code == 200
        assert response.json()["suggestions"] == []


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"q": "x", "k": "0"}, 400, "k: Ensure this value is greater than or equal to 1."),
        ({"q": "x", "k": "21"}, 400, "k: Ensure this value is less than or equal to 20."),
        ({"q": "x", "k": "five"}, 400, "k: Enter a whole number."),
        ({"q": "x" * 201}, 400, "q: Ensure this value has at most 200 characters (it has 201)."),
        ({"q": "x", "encoder": "gist-small"}, 400, "Corpus 'small' has no index for encoder 'gist-small'"),
        ({"q": "x", "corpus": "nope"}, 404, "Unknown corpus 'nope'."),
        ({"q": "x", "corpus": "not a slug!"}, 400, "corpus: "),
    ],
)
def test_bad_requests_get_json_errors(
    client: Client, small_corpus: Corpus, params: dict[str, str], status: int, message: str
) -> None:
    response = client.get("/api/suggest", params)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"].startswith(message)


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_only_get_is_allowed(client: Client, small_corpus: Corpus, method: str) -> None:
    response = getattr(client, method)("/api/suggest?q=x")
    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert "error" in response.json()


def test_corpus_is_required_only_when_ambiguous(client: Client, small_corpus: Corpus, configure) -> None:
    assert client.get("/api/suggest", {"q": "refund"}).status_code == 200
    other = Corpus.objects.create(name="Other", slug="other", default_encoder="minilm")
    ingest_parsed(other, parse_qa_file(faq_csv(), filename="f.csv"))
    invalidate_catalog()
    response = client.get("/api/suggest", {"q": "refund"})
    assert response.status_code == 400
    assert response.json()["error"] == "Name a corpus: one of other, small."
    configure(DEFAULT_CORPUS="other")
    assert client.get("/api/suggest", {"q": "refund"}).json()["corpus"] == "other"


def test_no_corpus_at_all_is_404(client: Client, db: None) -> None:
    response = client.get("/api/suggest", {"q": "x"})
    assert response.status_code == 404
    assert "manage.py ingest" in response.json()["error"]


def test_missing_or_broken_index_is_503(client: Client, small_corpus: Corpus) -> None:
    build = IndexBuild.objects.get(corpus=small_corpus, is_live=True)
    (app_settings().index_dir / build.file_name).write_bytes(b"garbage")
    response = client.get("/api/suggest", {"q": "password"})
    assert response.status_code == 503
    assert "cannot be loaded" in response.json()["error"]
    (app_settings().index_dir / build.file_name).unlink()
    assert client.get("/api/suggest", {"q": "password"}).status_code == 503


def test_corpus_without_any_index_is_503(client: Client, db: None) -> None:
    Corpus.objects.create(name="Empty", slug="empty")
    response = client.get("/api/suggest", {"q": "x"})
    assert response.status_code == 503
    assert "has no index yet" in response.json()["error"]


def test_unloadable_encoder_is_503(client: Client, small_corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(key: str) -> None:
        raise EncoderUnavailableError("weights gone")

    monkeypatch.setattr(encoder_registry(), "get", unavailable)
    response = client.get("/api/suggest", {"q": "password"})
    assert response.status_code == 503
    assert response.json()["error"].startswith("The encoder 'minilm' cannot be loaded on this server")
    assert "weights gone" not in response.json()["error"]  # the details, paths included, are for the log


def test_identical_question_texts_are_never_suggested_twice(minilm) -> None:
    questions = ["What is a refund?", "what is a refund", "How do refunds work?", "Refund policy?"]
    vectors = minilm.encode(questions)
    index = VectorIndex.build(vectors, [1, 2, 3, 4], encoder="minilm", dimension=384, ann_threshold=100)
    space = SearchSpace(index, [(i + 1, q, "a", "") for i, q in enumerate(questions)])
    suggestions = rank(space, "refund", embed=lambda text: minilm.encode([text])[0], k=4, method="semantic")
    assert [s.question for s in suggestions].count("What is a refund?") + [s.question for s in suggestions].count(
        "what is a refund"
    ) == 1
    assert len(suggestions) == 3


def test_partial_escapes_html(client: Client, db: None) -> None:
    corpus = Corpus.objects.create(name="XSS", slug="xss", default_encoder="minilm")
    ingest_parsed(
        corpus,
        parse_qa_file(
            b'question,answer\n"How do I use <script>alert(1)</script> tags?","Never <b>trust</b> input"\n',
            filename="f.csv",
        ),
    )
    response = client.get("/suggest", {"q": "script tags"}, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>alert(1)</script>" not in html and "<b>trust</b>" not in html
    # Escaped first, then the matching words marked: the corpus's markup never reaches the page.
    assert "How do I use &lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt; <mark>tags</mark>?" in html
    assert 'role="listbox"' in html and 'role="option"' in html


def test_the_hand_off_is_offered_when_nothing_fits_and_after_a_submit(client: Client, small_corpus: Corpus) -> None:
    Corpus.objects.filter(pk=small_corpus.pk).update(
        handoff_text="Ask <our> team", handoff_url="https://example.com/contact?a=1&b=2"
    )
    invalidate_catalog()
    link = '<a href="https://example.com/contact?a=1&amp;b=2">Ask &lt;our&gt; team</a>'

    def partial(q: str) -> str:
        return client.get("/suggest", {"q": q}, headers={"HX-Request": "true"}).content.decode()

    # Nothing fits: the hand-off goes out of band into the box's region; something fits: it is cleared.
    assert f'<div id="handoff" hx-swap-oob="innerHTML"><p class="handoff">{link}</p>\n</div>' in partial("zqxj")
    assert '<div id="handoff" hx-swap-oob="innerHTML"></div>' in partial("cancel my subscription")
    assert '<div id="handoff" hx-swap-oob="innerHTML"></div>' in partial("")
    # A submit without choosing shows it under the results, whether any came back or not.
    assert link in client.get("/", {"q": "cancel my subscription"}).content.decode()
    assert link in client.get("/", {"q": "zqxj"}).content.decode()
    assert 'id="handoff"' in client.get("/").content.decode() and link not in client.get("/").content.decode()
    # A url of another scheme (a database edit) is never a link; the text alone still helps.
    Corpus.objects.filter(pk=small_corpus.pk).update(handoff_url="javascript:alert(1)")
    invalidate_catalog()
    assert '<p class="handoff">Ask &lt;our&gt; team</p>' in partial("zqxj") and "javascript:" not in partial("zqxj")
    Corpus.objects.filter(pk=small_corpus.pk).update(handoff_text="", handoff_url="")
    invalidate_catalog()
    assert 'class="handoff"' not in partial("zqxj")


def test_partial_shows_errors_inline_and_redirects_without_htmx(client: Client, small_corpus: Corpus) -> None:
    response = client.get("/suggest", {"q": "x", "k": "99"}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and 'role="alert"' in response.content.decode()
    response = client.get("/suggest", {"q": "refund"})
    assert response.status_code == 302 and response["Location"] == "/?q=refund"


def test_search_page_works_without_javascript(client: Client, small_corpus: Corpus) -> None:
    page = client.get("/").content.decode()
    assert 'role="combobox"' in page and 'hx-get="/suggest"' in page
    assert "/static/django_htmx/htmx" in page  # django-htmx's own script, no CDN
    response = client.get("/", {"q": "I forgot my password"})
    html = response.content.decode()
    assert response.status_code == 200
    assert "How do <mark>I</mark> reset <mark>my</mark> <mark>password</mark>?" in html and "Forgot password" in html
    assert 'data-encoder="minilm"' in html
    assert client.get("/", {"q": "x", "k": "0"}).status_code == 400


def test_page_offers_selectors_when_there_is_a_choice(client: Client, small_corpus: Corpus) -> None:
    assert 'id="corpus"' not in client.get("/").content.decode()
    other = Corpus.objects.create(name="Other", slug="other", default_encoder="minilm")
    ingest_parsed(other, parse_qa_file(faq_csv(), filename="f.csv"))
    invalidate_catalog()
    page = client.get("/", {"corpus": "other"}).content.decode()
    assert 'id="corpus"' in page and '<option value="other" selected>' in page


def test_static_files_are_served(client: Client, db: None) -> None:
    response = client.get("/static/autocomplete/combobox.js")
    assert response.status_code == 200


def test_suggest_form_shares_its_fields_and_still_validates_each_request_alone() -> None:
    from autocomplete.forms import SuggestForm

    bad, good = SuggestForm({"q": "x", "k": "99"}), SuggestForm({"q": "refund", "k": "3"})
    assert bad.fields is good.fields  # not deep-copied per keystroke
    assert not bad.is_valid() and good.is_valid()
    assert good.cleaned_data == {"q": "refund", "corpus": "", "encoder": "", "k": 3, "highlight": False, "tags": None}
    assert bad.error_message() == "k: Ensure this value is less than or equal to 20."


def database_down(*args: object) -> None:
    raise OperationalError("could not connect to server: Connection refused")


def test_a_database_outage_gives_503s_not_500s_and_service_resumes(client: Client, small_corpus: Corpus) -> None:
    forget_loaded()  # a process that has loaded nothing yet needs the database for everything
    with connection.execute_wrapper(database_down):
        api = client.get("/api/suggest", {"q": "password"})
        partial = client.get("/suggest", {"q": "password"}, HTTP_HX_REQUEST="true")
        page = client.get("/", {"q": "password"})
        empty_page = client.get("/")
    message = "Suggestions are briefly unavailable; try again in a moment."
    assert (api.status_code, api.json()) == (503, {"error": message})
    assert partial.status_code == 200 and message in partial.content.decode()
    assert page.status_code == 503 and message in page.content.decode()
    assert empty_page.status_code == 503
    assert client.get("/api/suggest", {"q": "password"}).status_code == 200
    assert "Forgot password" in client.get("/", {"q": "password"}).content.decode()


def test_corpora_already_loaded_keep_answering_through_an_outage(client: Client, small_corpus: Corpus) -> None:
    assert client.get("/api/suggest", {"q": "password"}).status_code == 200
    with connection.execute_wrapper(database_down):
        response = client.get("/api/suggest", {"q": "cancel my plan"})
    assert response.status_code == 200
    assert response.json()["suggestions"][0]["question"] == "How do I cancel my subscription?"


@pytest.fixture
def mounted(settings, small_corpus: Corpus) -> Corpus:
    settings.ROOT_URLCONF = "tests.mounted_urls"
    settings.MIDDLEWARE = SITE_MIDDLEWARE
    return small_corpus


def test_under_a_prefix_the_page_links_to_the_apps_own_paths(client: Client, mounted: Corpus) -> None:
    page = client.get("/autocomplete/").content.decode()
    assert 'action="/autocomplete/"' in page and 'hx-get="/autocomplete/suggest"' in page
    assert '<a href="/autocomplete/" class="brand">' in page
    partial = client.get("/autocomplete/suggest", {"q": "reset my password"}, HTTP_HX_REQUEST="true")
    listed = partial.content.decode().replace("<mark>", "").replace("</mark>", "")
    assert "How do I reset my password?" in listed
    # Without JavaScript the partial's address leads back to the page, under the prefix.
    redirect = client.get("/autocomplete/suggest", {"q": "password"})
    assert redirect.status_code == 302 and redirect["Location"] == "/autocomplete/?q=password"


def test_under_a_prefix_the_description_names_where_the_paths_start(client: Client, mounted: Corpus) -> None:
    description = client.get("/autocomplete/api/openapi.json").json()
    assert description["servers"] == [{"url": "/autocomplete", "description": "Where this site mounts the app."}]
    assert "/api/suggest" in description["paths"]
