"""The OpenAPI description of the JSON API is served, valid, and true of real answers (schemathesis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from autocomplete import events, search
from autocomplete.conf import app_settings
from autocomplete.models import Corpus, QAPair, SearchEvent
from autocomplete.views import OPENAPI_DESCRIPTION

pytestmark = pytest.mark.django_db


def _description() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(OPENAPI_DESCRIPTION.read_text())
    return loaded


def _parameter(name: str) -> dict[str, Any]:
    parameters = _description()["paths"]["/api/suggest"]["get"]["parameters"]
    schema: dict[str, Any] = next(p["schema"] for p in parameters if p["name"] == name)
    return schema


def test_the_description_is_valid_openapi_3_1() -> None:
    description = _description()
    assert description["openapi"].startswith("3.1.")
    errors = [error.message for error in OPENAPI_31_VALIDATOR.iter_errors(description)]
    assert errors == []


def test_the_limits_described_are_the_default_settings() -> None:
    assert _parameter("q")["maxLength"] == app_settings().max_query_length
    assert _parameter("k")["anyOf"][0]["maximum"] == app_settings().max_k
    assert _parameter("k")["default"] == app_settings().default_k


def test_every_status_the_api_may_answer_is_described() -> None:
    responses = _description()["paths"]["/api/suggest"]["get"]["responses"]
    assert set(responses) == {"200", "400", "401", "403", "404", "429", "503"}
    assert "MethodNotAllowed" in _description()["components"]["responses"]


def test_it_is_served_without_a_session_or_a_query(client: Client, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == _description()
    assert "Set-Cookie" not in response and "Cookie" not in response.get("Vary", "")
    assert client.post("/api/openapi.json").status_code == 405


@pytest.fixture
def described_app(small_corpus: Corpus) -> Iterator[WSGIHandler]:
    """The real WSGI app on `small_corpus`, two of whose pairs have links (one of a scheme never given)."""
    pairs = list(QAPair.objects.filter(corpus=small_corpus).order_by("id"))
    pairs[0].url = "https://example.com/help/password"
    pairs[1].url = "ftp://example.com/email"
    QAPair.objects.bulk_update(pairs[:2], ["url"])
    search.forget_loaded()
    # As Django's test client does: the test's database connection outlives each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield WSGIHandler()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


# Loaded from the app's file (the test above holds the served one to it); schemathesis's lazy
# `from_fixture` loader does not run under pytest 9.
schema = schemathesis.openapi.from_dict(_description())


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    database=None,
    # The fixture's corpus is only read by the requests, so sharing it across examples is sound.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_real_answers_match_the_description(case: Any, described_app: WSGIHandler) -> None:
    # A well-formed request may still name an encoder the corpus has no index for, which the API
    # answers 400 by contract; every other check runs, server errors and response schemas included.
    case.call_and_validate(app=described_app, excluded_checks=[schemathesis.checks.positive_data_acceptance])


def test_answers_with_links_match_the_description_and_other_schemes_are_left_out(
    described_app: Any, client: Client
) -> None:
    components = _description()["components"]
    body_schema = jsonschema_rs.validator_for({"$ref": "#/components/schemas/Suggestions", "components": components})

    def first(q: str) -> dict[str, Any]:
        body = client.get("/api/suggest", {"q": q}).json()
        body_schema.validate(body)
        suggestion: dict[str, Any] = body["suggestions"][0]
        return suggestion

    password = first("reset my password")
    assert password["question"] == "How do I reset my password?"
    assert password["url"] == "https://example.com/help/password"
    email = first("change my email address")
    assert email["question"] == "How can I change my email address?" and "url" not in email


def test_the_405_body_is_the_described_error(client: Client, small_corpus: Corpus) -> None:
    response = client.post("/api/suggest?q=x")
    described = _description()["components"]["responses"]["MethodNotAllowed"]
    assert response.status_code == 405 and response["Allow"] == described["headers"]["Allow"]["schema"]["const"]
    error_schema = {**_description()["components"]["schemas"]["Error"]}
    assert jsonschema_rs.validator_for(error_schema).is_valid(response.json())


def test_highlight_offsets_match_the_description(described_app: Any, client: Client) -> None:
    components = _description()["components"]
    body_schema = jsonschema_rs.validator_for({"$ref": "#/components/schemas/Suggestions", "components": components})
    body = client.get("/api/suggest", {"q": "reset my pass", "highlight": "1"}).json()
    body_schema.validate(body)
    first = body["suggestions"][0]
    assert [first["question"][start:end] for start, end in first["highlight"]] == ["reset", "my", "pass"]
    # The items' shape is checked, not only present: a bare offset would not pass.
    assert not body_schema.is_valid({**body, "suggestions": [{**first, "highlight": [0, 5]}]})


def test_the_event_described_is_the_event_checked() -> None:
    described = _description()["components"]["schemas"]["SearchEvent"]
    assert set(described["properties"]) == events.FIELDS
    assert tuple(described["required"]) == events.REQUIRED
    assert described["properties"]["trigger"]["enum"] == SearchEvent.Trigger.values
    assert described["properties"]["query"]["maxLength"] == app_settings().max_query_length
    assert described["properties"]["shown_ids"]["maxItems"] == app_settings().max_k
    assert (
        f"{events.MAX_EVENT_BYTES:,} bytes"
        in _description()["paths"]["/api/events"]["post"]["responses"]["400"]["description"]
    )
