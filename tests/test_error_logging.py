"""Every 500 reaches stderr with its traceback, through the handler config/settings.py configures."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path

from autocomplete.models import Corpus


def explode(request: HttpRequest) -> HttpResponse:
    raise ZeroDivisionError("a bug only this test has")


urlpatterns = [path("explode", explode), path("", include("config.urls"))]


@pytest.fixture
def stderr_of_request_errors() -> Iterator[io.StringIO]:
    """What the configured stderr handler of `django.request` writes, captured."""
    # pytest adds its own capturing handlers; the configured one is the plain StreamHandler.
    (handler,) = [h for h in logging.getLogger("django.request").handlers if type(h) is logging.StreamHandler]
    captured = io.StringIO()
    original = handler.setStream(captured)
    yield captured
    handler.setStream(original)


@pytest.mark.urls(__name__)
def test_a_500_is_logged_with_its_traceback(db: None, stderr_of_request_errors: io.StringIO) -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/explode")
    assert response.status_code == 500
    log = stderr_of_request_errors.getvalue()
    assert "ERROR django.request: Internal Server Error: /explode" in log
    assert "Traceback (most recent call last)" in log
    assert 'raise ZeroDivisionError("a bug only this test has")' in log
    assert "a bug only this test has" not in response.content.decode()  # debug is off: visitors see no details


@pytest.mark.urls(__name__)
def test_4xx_answers_are_not_logged_as_errors(db: None, stderr_of_request_errors: io.StringIO) -> None:
    assert Client().get("/no-such-page").status_code == 404
    assert stderr_of_request_errors.getvalue() == ""


@pytest.mark.urls(__name__)
def test_deliberate_503s_are_left_to_the_code_that_found_their_cause(
    db: None, stderr_of_request_errors: io.StringIO
) -> None:
    Corpus.objects.create(name="Empty", slug="empty")
    assert Client().get("/api/suggest", {"q": "x"}).status_code == 503
    assert stderr_of_request_errors.getvalue() == ""
