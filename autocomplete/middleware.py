"""A fast path for /api/suggest: it needs no session, user, CSRF token or messages.

Each keystroke is a request, so the middleware that the admin and the pages need would cost on
every one of them. This middleware sits right after SecurityMiddleware and answers the JSON API
itself; everything else goes down the usual chain.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .views import api_suggest

FAST_PATHS = frozenset({"/api/suggest"})


class SuggestFastPathMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info not in FAST_PATHS:
            return self.get_response(request)
        # CommonMiddleware would have validated the Host header; a bad one still gets its 400.
        request.get_host()
        response = api_suggest(request)
        # What the skipped XFrameOptionsMiddleware would have added.
        response.setdefault("X-Frame-Options", "DENY")
        return response
