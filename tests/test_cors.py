"""CORS on /api/suggest: off by default; allowed origins only, echoed, with Vary: Origin."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from autocomplete.conf import AutocompleteSettings
from autocomplete.models import Corpus

pytestmark = pytest.mark.django_db

ALLOWED = "https://help.example.com"
PREFLIGHT: dict[str, Any] = {"HTTP_ORIGIN": ALLOWED, "HTTP_ACCESS_CONTROL_REQUEST_METHOD": "GET"}


@pytest.fixture
def allow(configure: Callable[..., None]) -> None:
    configure(CORS_ALLOWED_ORIGINS=f"{ALLOWED}, http://localhost:3000")


def test_off_by_default_no_cors_header_at_all(client: Client, small_corpus: Corpus) -> None:
    response = client.get("/api/suggest", {"q": "x"}, HTTP_ORIGIN=ALLOWED)
    assert response.status_code == 200
    assert not [name for name in response.headers if name.lower().startswith("access-control")]
    assert "Origin" not in response.get("Vary", "")
    assert client.options("/api/suggest", **PREFLIGHT).status_code == 405  # no preflight answered either


def test_an_allowed_origin_is_echoed(client: Client, small_corpus: Corpus, allow: None) -> None:
    response = client.get("/api/suggest", {"q": "password"}, HTTP_ORIGIN=ALLOWED)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert response["Access-Control-Expose-Headers"] == "Retry-After"
    assert "Origin" in response["Vary"]
    other = client.get("/api/suggest", {"q": "password"}, HTTP_ORIGIN="http://localhost:3000")
    assert other["Access-Control-Allow-Origin"] == "http://localhost:3000"


@pytest.mark.parametrize("origin", ["https://evil.example", "https://help.example.com.evil.example", "null", None])
def test_other_origins_get_no_allow_header(
    client: Client, small_corpus: Corpus, allow: None, origin: str | None
) -> None:
    headers: dict[str, Any] = {"HTTP_ORIGIN": origin} if origin else {}
    response = client.get("/api/suggest", {"q": "password"}, **headers)
    assert response.status_code == 200  # the server answers; the browser withholds it from the page
    assert "Access-Control-Allow-Origin" not in response
    assert "Origin" in response["Vary"]


def test_preflight_from_an_allowed_origin(client: Client, small_corpus: Corpus, allow: None) -> None:
    response = client.options("/api/suggest", **PREFLIGHT, HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == ALLOWED
    assert response["Access-Control-Allow-Methods"] == "GET"
    assert response["Access-Control-Allow-Headers"] == "Authorization"
    assert int(response["Access-Control-Max-Age"]) > 0
    assert "Origin" in response["Vary"]


def test_preflight_from_another_origin_allows_nothing(client: Client, small_corpus: Corpus, allow: None) -> None:
    response = client.options("/api/suggest", **(PREFLIGHT | {"HTTP_ORIGIN": "https://evil.example"}))
    assert response.status_code == 204
    assert not [name for name in response.headers if name.lower().startswith("access-control")]


def test_a_plain_options_request_is_still_refused(client: Client, small_corpus: Corpus, allow: None) -> None:
    assert client.options("/api/suggest", HTTP_ORIGIN=ALLOWED).status_code == 405


def test_errors_and_429_are_readable_by_an_allowed_page(
    client: Client, small_corpus: Corpus, allow: None, configure: Callable[..., None]
) -> None:
    assert client.get("/api/suggest", {"k": "0"}, HTTP_ORIGIN=ALLOWED)["Access-Control-Allow-Origin"] == ALLOWED
    configure(RATE_LIMIT=True, RATE_LIMIT_PER_SECOND=0.001, RATE_LIMIT_BURST=1)
    caches["default"].clear()
    client.get("/api/suggest", {"q": ""})
    response = client.get("/api/suggest", {"q": ""}, HTTP_ORIGIN=ALLOWED)
    caches["default"].clear()
    assert response.status_code == 429
    assert response["Access-Control-Allow-Origin"] == ALLOWED


@pytest.mark.parametrize("origin", ["https://help.example.com/", "help.example.com", "https://a.example/path"])
def test_a_malformed_origin_is_refused_at_start_up(origin: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="scheme://host"):
        AutocompleteSettings.from_dict({"CORS_ALLOWED_ORIGINS": [origin]})
