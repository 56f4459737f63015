"""The /api/suggest fast path skips the page middleware but keeps the host check and headers."""

from __future__ import annotations

import pytest
from django.test import Client

from autocomplete.models import Corpus

pytestmark = pytest.mark.django_db


def test_suggest_is_answered_without_session_or_csrf(client: Client, small_corpus: Corpus) -> None:
    response = client.get("/api/suggest", {"q": "reset my password"})
    assert response.status_code == 200
    assert response.json()["suggestions"][0]["question"] == "How do I reset my password?"
    assert response["X-Frame-Options"] == "DENY"
    assert "X-Content-Type-Options" in response  # SecurityMiddleware still runs first
    assert not hasattr(response.wsgi_request, "session") and not hasattr(response.wsgi_request, "user")


def test_a_foreign_host_is_still_refused_in_json(client: Client, small_corpus: Corpus) -> None:
    response = client.get("/api/suggest", {"q": "password"}, HTTP_HOST="evil.example")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert "host name" in response.json()["error"]


def test_other_paths_keep_the_full_chain(client: Client, small_corpus: Corpus) -> None:
    response = client.get("/", {"q": "password"})
    assert response.status_code == 200 and hasattr(response.wsgi_request, "session")


def test_under_a_prefix_the_fast_path_finds_the_apps_paths(client: Client, small_corpus: Corpus, settings) -> None:
    settings.ROOT_URLCONF = "tests.mounted_urls"
    response = client.get("/autocomplete/api/suggest", {"q": "reset my password"})
    assert response.status_code == 200
    assert response.json()["suggestions"][0]["question"] == "How do I reset my password?"
    assert not hasattr(response.wsgi_request, "session")
    assert client.get("/autocomplete/healthz").status_code == 200
    # The app's paths at the root are no longer its own: a site's page there keeps the whole chain.
    assert client.get("/api/suggest", {"q": "password"}).status_code == 404
