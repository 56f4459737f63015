"""CORS for /api/suggest: pages on the origins in `cors_allowed_origins` may call it from a browser.

A few lines here rather than django-cors-headers, whose middleware would run its checks on every
request of the site, while only the fast path's one URL needs them. No origin listed: no CORS header.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

from .conf import app_settings

# Browsers may reuse a preflight answer this long (Chromium caps it at two hours).
PREFLIGHT_MAX_AGE_SECONDS = 3600


def is_preflight(request: HttpRequest) -> bool:
    """A browser asking whether it may send the real request, when any origin is allowed at all."""
    return (
        request.method == "OPTIONS"
        and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in request.META
        and bool(app_settings().cors_allowed_origins)
    )


def preflight_response(request: HttpRequest) -> HttpResponse:
    """The answer to a preflight: GET with an Authorization header, for an allowed origin only."""
    response = HttpResponse(status=204)
    if _allowed_origin(request):
        response["Access-Control-Allow-Methods"] = "GET"
        response["Access-Control-Allow-Headers"] = "Authorization"
        response["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_SECONDS)
    return with_cors_headers(request, response)


def with_cors_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """Let an allowed origin read the response; caches keep answers for different origins apart."""
    if not app_settings().cors_allowed_origins:
        return response
    patch_vary_headers(response, ["Origin"])
    origin = _allowed_origin(request)
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        # Not a CORS-safelisted header, so a page could not read how long to wait without this.
        response["Access-Control-Expose-Headers"] = "Retry-After"
    return response


def _allowed_origin(request: HttpRequest) -> str:
    origin = str(request.META.get("HTTP_ORIGIN", ""))
    return origin if origin in app_settings().cors_allowed_origins else ""
