"""The Content-Security-Policy on every answer: pages, the htmx partial, /api/suggest, admin, static files.

SecurityMiddleware sends X-Content-Type-Options, Referrer-Policy and Cross-Origin-Opener-Policy, and
XFrameOptionsMiddleware (or the fast path) X-Frame-Options; Django 5.2 has no CSP of its own. This
middleware comes first in MIDDLEWARE so that /api/suggest, answered before the rest of the chain, gets
it as well. Scripts and styles come from this origin only: no inline code, no eval, no other site.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # A view that set its own policy knows better; every other answer gets the app's.
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
