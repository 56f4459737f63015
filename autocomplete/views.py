"""Thin views: validate the request, ask search.py, render HTML or JSON."""

from __future__ import annotations

import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any

from django.core.exceptions import TooManyFieldsSent
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_safe

from embeddings.highlight import match_spans
from embeddings.typed_query import TypedQuery

from . import health
from .api_keys import AccessError, require_access
from .catalog import CorpusEntry
from .conf import app_settings
from .cors import is_preflight, preflight_response, with_cors_headers
from .encoder_registry import encoder_registry
from .events import EventError, parse_event, record_event
from .forms import SuggestForm
from .links import link_url
from .popular import popular_suggestions
from .rate_limit import seconds_until_allowed
from .search import SearchError, SuggestResult, corpus_list, corpus_tags, resolve_corpus, suggestions_for

OPENAPI_DESCRIPTION = Path(__file__).with_name("openapi.json")

# As Django's json_script writes them: markup characters in the data travel as \u escapes, so a
# body that something sniffs or renders as HTML still holds no tag.
_MARKUP_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


class _InertJSONEncoder(DjangoJSONEncoder):
    def encode(self, o: Any) -> str:
        return super().encode(o).translate(_MARKUP_ESCAPES)


class InertJsonResponse(JsonResponse):
    """A JsonResponse whose text carries no markup character as it is (see _MARKUP_ESCAPES)."""

    def __init__(self, data: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(data, encoder=_InertJSONEncoder, **kwargs)


def _encoder_choices(entry: CorpusEntry) -> list[tuple[str, str]]:
    registry = encoder_registry()
    return [(key, registry.spec(key).name) for key in sorted(entry.live) if key in registry.keys]


def _page_context(form: SuggestForm) -> dict[str, Any]:
    """Selectors for the page: every public corpus, and the encoders the chosen one is indexed with."""
    data = form.cleaned_data if form.is_valid() else {}
    corpora = corpus_list()
    try:
        entry: CorpusEntry | None = resolve_corpus(data.get("corpus") or None, public_only=True)
    except SearchError:
        entry = corpora[0] if corpora else None
    return {
        "form": form,
        "corpora": corpora,
        "corpus": entry,
        "encoders": _encoder_choices(entry) if entry else [],
        "selected_encoder": data.get("encoder") or "",
        "topic_choices": corpus_tags(entry) if entry else [],
        "selected_tags": ",".join(data.get("tags") or ()),
        "max_query_length": app_settings().max_query_length,
        "events": app_settings().events,
        "settle_ms": round(app_settings().settle_seconds * 1000),
    }


def _suggest(form: SuggestForm, *, public_only: bool = True, authorization: str = "") -> SuggestResult:
    """Suggestions for a valid form: the page sees public corpora only, the API any it holds a key for."""
    data = form.cleaned_data
    entry = resolve_corpus(data["corpus"] or None, public_only=public_only)
    require_access(entry, authorization=authorization)
    return suggestions_for(
        data["q"], corpus=entry.slug, k=data["k"], encoder=data["encoder"] or None, tags=data["tags"]
    )


@require_GET
def search_page(request: HttpRequest) -> HttpResponse:
    """The search box; with `q` (a submit without JavaScript) it also shows the results."""
    form = SuggestForm(request.GET)
    context: dict[str, Any] = {"form": form, "max_query_length": app_settings().max_query_length}
    status = 200
    try:
        context |= _page_context(form)
        if not form.is_valid():
            context["error"], status = form.error_message(), 400
        elif form.cleaned_data["q"].strip():
            context["result"] = _suggest(form)
    except SearchError as exc:
        context["error"], status = str(exc), exc.status
    return render(request, "autocomplete/search.html", context, status=status)


@require_GET
def suggest_partial(request: HttpRequest) -> HttpResponse:
    """The listbox of suggestions that the HTMX search box swaps in on every keystroke."""
    # The header htmx sends, read here rather than through django-htmx's middleware, which a site
    # using the app need not install.
    if request.headers.get("HX-Request") != "true":
        return redirect(f"{reverse('autocomplete:search')}?{request.GET.urlencode()}")
    retry_after = seconds_until_allowed(request)
    if retry_after:
        return partial_rate_limited(retry_after)
    form = SuggestForm(request.GET)
    context: dict[str, Any] = {"query": request.GET.get("q", "")}
    if not form.is_valid():
        context["error"] = form.error_message()
    else:
        try:
            result = _suggest(form)
        except SearchError as exc:
            context["error"] = str(exc)
        else:
            if not result.query.strip():
                # The empty box (focused or cleared) offers what visitors chose most, or featured pairs.
                k = form.cleaned_data["k"]
                result = dataclasses.replace(result, suggestions=popular_suggestions(result.corpus.id, k=k))
            context["result"] = result
    # 200 even for an error: htmx swaps only successful responses, and the message belongs in the list.
    return render(request, "autocomplete/_suggestions.html", context)


def api_suggest(request: HttpRequest) -> HttpResponse:
    """GET /api/suggest?q=&corpus=&k=&encoder=&tags=&highlight= (see README), with CORS and the rate limit.

    The fast-path middleware calls it before the session and auth middleware; without that
    middleware the URL reaches it the usual way and answers the same.
    """
    if is_preflight(request):
        response: HttpResponse = preflight_response(request)
    elif retry_after := seconds_until_allowed(request):
        response = api_rate_limited(retry_after)
    else:
        response = _api_answer(request)
    return with_cors_headers(request, response)


def _api_answer(request: HttpRequest) -> JsonResponse:
    if request.method != "GET":
        response = InertJsonResponse({"error": "Method not allowed: use GET."}, status=405)
        response["Allow"] = "GET"
        return response
    try:
        form = SuggestForm(request.GET)
    except TooManyFieldsSent:
        # Django's own 400 page would be HTML; an API client reads JSON.
        return InertJsonResponse(
            {"error": "Too many query parameters: send only q, corpus, k, encoder, tags and highlight."}, status=400
        )
    if not form.is_valid():
        return InertJsonResponse({"error": form.error_message()}, status=400)
    try:
        result = _suggest(form, public_only=False, authorization=request.META.get("HTTP_AUTHORIZATION", ""))
    except (SearchError, AccessError) as exc:
        response = InertJsonResponse({"error": str(exc)}, status=exc.status)
        if exc.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    # Parsed once for every suggestion, and only when asked: the default answer costs nothing more.
    typed = TypedQuery.parse(result.query) if form.cleaned_data["highlight"] else None
    return InertJsonResponse(
        {
            "query": result.query,
            "corpus": result.corpus.slug,
            "encoder": result.encoder.key,
            "suggestions": [
                {"id": s.id, "question": s.question, "answer": s.answer, "score": s.score}
                | ({"url": url} if (url := link_url(s.url)) else {})
                | ({"highlight": match_spans(typed, s.question)} if typed else {})
                | ({"pinned": True} if s.pinned else {})
                for s in result.suggestions
            ],
            "took_ms": result.took_ms,
        }
    )


# sendBeacon cannot send a CSRF token; events.py checks every field instead, and an event grants nothing.
@csrf_exempt
def api_events(request: HttpRequest) -> JsonResponse:
    """POST /api/events: one settled query (and its choice) from the box or an API client (see README)."""
    if request.method != "POST":
        response = InertJsonResponse({"error": "Method not allowed: POST one event as JSON."}, status=405)
        response["Allow"] = "POST"
        return response
    if not app_settings().events:
        return InertJsonResponse({"error": "Search events are not recorded here (AUTOCOMPLETE_EVENTS=0)."}, status=404)
    retry_after = seconds_until_allowed(request)
    if retry_after:
        return api_rate_limited(retry_after)
    try:
        event = record_event(parse_event(request.body, authorization=request.META.get("HTTP_AUTHORIZATION", "")))
    except (EventError, AccessError, SearchError) as exc:
        return InertJsonResponse({"error": str(exc)}, status=exc.status)
    return InertJsonResponse({"id": event.pk}, status=201)


def api_rate_limited(retry_after: int) -> JsonResponse:
    """The API's answer to a client over its rate limit."""
    message = f"Too many requests from your address: retry after {retry_after} s."
    response = JsonResponse({"error": message}, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def partial_rate_limited(retry_after: int) -> HttpResponse:
    """The search box's answer to a client over its rate limit: a message in place of the list.

    htmx swaps no error response by default; the box's script swaps this one in (static/autocomplete).
    """
    context = {"error": f"Too many requests from your address: wait {retry_after} s and type again."}
    response = HttpResponse(render_to_string("autocomplete/_suggestions.html", context), status=429)
    response["Retry-After"] = str(retry_after)
    return response


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers; no database, no model."""
    return JsonResponse(health.liveness())


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when every live corpus can be served here, else 503 with the reason."""
    readiness = health.readiness()
    return JsonResponse(readiness.as_json(), status=200 if readiness.ready else 503)


@cache
def _openapi_description(server: str) -> bytes:
    text = OPENAPI_DESCRIPTION.read_bytes()
    if not server:
        return text
    # Its paths are the app's own; mounted under a prefix, `servers` says where they start.
    description = json.loads(text)
    description["servers"] = [{"url": server, "description": "Where this site mounts the app."}]
    return json.dumps(description, indent=2).encode()


@require_safe
def api_description(request: HttpRequest) -> HttpResponse:
    """GET /api/openapi.json: the OpenAPI 3.1 description of the JSON API, as kept in the app."""
    server = reverse("autocomplete:search").rstrip("/")
    return HttpResponse(_openapi_description(server), content_type="application/json")
