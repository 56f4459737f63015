"""A fast path for /api/suggest and the health probes: they need no session, user, CSRF token or messages.

Each keystroke is a request, so the middleware that the admin and the pages need would cost on
every one of them; a probe polled every few seconds should cost as little. This middleware sits
right after SecurityMiddleware and answers these paths itself; everything else goes down the
usual chain.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .views import api_suggest, healthz, readyz

FAST_PATHS = frozenset({"/api/suggest"})
# Orchestrators probe a process by its address, not a served host name, and these answers carry
# no URL that a forged Host header could poison: the host check is left out for them.
HEALTH_PATHS: dict[str, Callable[[HttpRequest], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz}


class SuggestFastPathMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = HEALTH_PATHS.get(request.path_info)
        if probe is not None:
            response = probe(request)
        elif request.path_info in FAST_PATHS:
            # CommonMiddleware would have validated the Host header; a bad one still gets its 400.
            request.get_host()
            response = api_suggest(request)
        else:
            return self.get_response(request)
        # What the skipped XFrameOptionsMiddleware would have added.
        response.setdefault("X-Frame-Options", "DENY")
        return response
