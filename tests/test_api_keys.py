"""Private corpora answer only requests with a valid key for them; public ones need none."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from autocomplete import api_keys
from autocomplete.api_keys import bearer_token, new_key
from autocomplete.catalog import catalog
from autocomplete.ingest import ingest_parsed
from autocomplete.models import ApiKey, Corpus
from autocomplete.parsing import parse_qa_file

from .conftest import faq_csv

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _fresh_grants() -> Iterator[None]:
    api_keys.forget_grants()
    yield
    api_keys.forget_grants()


@pytest.fixture
def private(small_corpus: Corpus) -> Corpus:
    """A second corpus, private, beside the public `small`."""
    corpus = Corpus.objects.create(name="Internal", slug="internal", default_encoder="minilm", is_private=True)
    pairs = [("How do I book a meeting room?", "Use the Rooms tab of the intranet.")]
    ingest_parsed(corpus, parse_qa_file(faq_csv(pairs), filename="internal.csv"), encoder_key="minilm")
    return corpus


def make_key(*corpora: Corpus, name: str = "widget") -> str:
    key, digest = new_key()
    api_key = ApiKey.objects.create(name=name, key_sha256=digest, prefix=key[:9])
    api_key.corpora.set(corpora)
    return key


def ask(client: Client, corpus: str, key: str | None = None, q: str = "meeting room") -> Any:
    headers: dict[str, Any] = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key is not None else {}
    return client.get("/api/suggest", {"q": q, "corpus": corpus}, **headers)


def test_a_key_is_32_random_bytes_stored_only_as_its_sha256() -> None:
    key, digest = new_key()
    assert key.startswith("ac_") and len(key) == 3 + 43  # 32 bytes, URL-safe base64
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert new_key()[0] != key


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", ""), ("", ""), ("Bearer", ""), ("abc", "")],
)
def test_bearer_token(header: str, token: str) -> None:
    assert bearer_token(header) == token


def test_a_private_corpus_answers_a_valid_key(client: Client, private: Corpus) -> None:
    response = ask(client, "internal", make_key(private))
    assert response.status_code == 200
    assert response.json()["suggestions"][0]["question"] == "How do I book a meeting room?"


def test_without_a_key_401_with_the_fix(client: Client, private: Corpus) -> None:
    for response in (ask(client, "internal"), ask(client, "internal", key=""), ask(client, "internal", "ac_unknown")):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert "send an API key as `Authorization: Bearer <key>`" in ask(client, "internal").json()["error"]
    assert ask(client, "internal", "ac_unknown").json() == {
        "error": "Unknown API key: check that it was copied whole, or ask for a new one."
    }


def test_a_key_for_other_corpora_or_a_revoked_key_is_403(client: Client, private: Corpus) -> None:
    other = Corpus.objects.create(name="Other", slug="other", is_private=True)
    response = ask(client, "internal", make_key(other))
    assert response.status_code == 403
    assert response.json()["error"].startswith("This API key may not query corpus 'internal'")
    key = make_key(private)
    api_keys.revoke(ApiKey.objects.filter(key_sha256=api_keys.key_sha256(key)))
    response = ask(client, "internal", key)
    assert response.status_code == 403
    assert response.json() == {"error": "This API key has been revoked: ask an administrator for a new one."}


def test_public_corpora_need_no_key_and_ignore_one(client: Client, private: Corpus) -> None:
    for key in (None, "ac_unknown", make_key(private)):
        assert ask(client, "small", key, q="reset password").status_code == 200


def test_revocation_elsewhere_takes_effect_within_the_cache_delay(
    client: Client, private: Corpus, configure: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr(api_keys, "time", SimpleNamespace(monotonic=clock.monotonic))
    configure(API_KEY_CACHE_SECONDS=10.0)
    key = make_key(private)
    assert ask(client, "internal", key).status_code == 200
    # Revoked by another server's admin: this process learns it when its memory of the key expires.
    ApiKey.objects.update(revoked_at=timezone.now())
    clock.now += 9.9
    assert ask(client, "internal", key).status_code == 200
    clock.now += 0.1
    assert ask(client, "internal", key).status_code == 403


def test_a_known_key_costs_no_query_on_the_keystroke_path(
    client: Client, private: Corpus, configure: Callable[..., None]
) -> None:
    configure(CATALOG_TTL_SECONDS=60.0)
    key = make_key(private)
    assert ask(client, "internal", key).status_code == 200  # reads the key, the catalog and the index
    assert catalog().corpora["internal"].is_private
    with CaptureQueriesContext(connection) as queries:
        assert ask(client, "internal", key, q="book a room").status_code == 200
    assert [query["sql"] for query in queries.captured_queries] == []


def test_last_use_is_written_at_most_hourly(client: Client, private: Corpus) -> None:
    key = make_key(private)
    ask(client, "internal", key)
    first_use = ApiKey.objects.get().last_used_at
    assert first_use is not None
    api_keys.forget_grants()  # as if the process's memory of the key had expired
    with CaptureQueriesContext(connection) as queries:
        ask(client, "internal", key)
    assert not any(query["sql"].startswith("UPDATE") for query in queries.captured_queries)
    an_hour_before = first_use - api_keys.LAST_USED_RESOLUTION
    ApiKey.objects.update(last_used_at=an_hour_before)
    api_keys.forget_grants()
    ask(client, "internal", key)
    last_use = ApiKey.objects.get().last_used_at
    assert last_use is not None and last_use > an_hour_before


def test_the_search_page_neither_lists_nor_serves_a_private_corpus(client: Client, private: Corpus) -> None:
    page = client.get("/").content.decode()
    assert "Internal" not in page and 'name="corpus" value="small"' in page  # one public corpus: no selector
    response = client.get("/", {"q": "meeting room", "corpus": "internal"})
    assert response.status_code == 403
    assert "Corpus &#x27;internal&#x27; is private: query it through /api/suggest with an API key." in (
        response.content.decode()
    )
    partial = client.get("/suggest", {"q": "meeting room", "corpus": "internal"}, HTTP_HX_REQUEST="true")
    assert "is private" in partial.content.decode() and "meeting room?" not in partial.content.decode()
    # With no corpus named, the page serves the one public corpus rather than asking to choose.
    assert client.get("/suggest", {"q": "reset password"}, HTTP_HX_REQUEST="true").status_code == 200
    assert "Forgot password" in client.get("/", {"q": "reset password"}).content.decode()
