"""A fast path for /api/suggest and the health probes: they need no session, user, CSRF token or messages.

Each keystroke is a request, so the middleware that the admin and the pages need would cost on
every one of them; a probe polled every few seconds should cost as little. This middleware sits
right after SecurityMiddleware and answers the JSON API itself (CORS and the rate limit included)
and the probes; it also applies the rate limit to the search box's partial, before the session and
auth work, and passes everything else down the usual chain.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse

from .cors import is_preflight, preflight_response, with_cors_headers
from .rate_limit import seconds_until_allowed
from .views import InertJsonResponse, api_rate_limited, api_suggest, healthz, partial_rate_limited, readyz

logger = logging.getLogger(__name__)

API_PATH = "/api/suggest"
PARTIAL_PATH = "/suggest"
# Orchestrators probe a process by its address, not a served host name, and these answers carry
# no URL that a forged Host header could poison: the host check is left out for them.
HEALTH_PATHS: dict[str, Callable[[HttpRequest], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz}


class SuggestFastPathMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        probe = HEALTH_PATHS.get(path)
        if probe is not None:
            response = probe(request)
        elif path == API_PATH:
            # CommonMiddleware would have validated the Host header; a bad one still gets its 400,
            # as JSON like every other answer of the API.
            try:
                request.get_host()
            except DisallowedHost:
                logger.warning("Refused /api/suggest for a disallowed Host header")
                return InertJsonResponse({"error": "Bad request: this host name is not served here."}, status=400)
            response = with_cors_headers(request, self._api(request))
        elif path == PARTIAL_PATH:
            request.get_host()
            retry_after = seconds_until_allowed(request)
            if not retry_after:
                return self.get_response(request)
            response = partial_rate_limited(retry_after)
        else:
            return self.get_response(request)
        # What the skipped XFrameOptionsMiddleware would have added.
        response.setdefault("X-Frame-Options", "DENY")
        return response

    def _api(self, request: HttpRequest) -> HttpResponse:
        if is_preflight(request):
            return preflight_response(request)
        retry_after = seconds_until_allowed(request)
        if retry_after:
            return api_rate_limited(retry_after)
        return api_suggest(request)
