"""A fast path for the suggest API and the health probes: they need no session, user, CSRF token or messages.

Each keystroke is a request, so the middleware that the admin and the pages need would cost on
every one of them; a probe polled every few seconds should cost as little. This middleware sits
right after SecurityMiddleware and answers the JSON API itself (CORS and the rate limit included)
and the probes; it also applies the rate limit to the search box's partial, before the session and
auth work, and passes everything else down the usual chain. It finds those paths by reversing the
app's URL names, so it works wherever a site mounts the app; the views answer the same without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, get_script_prefix, reverse

from .rate_limit import seconds_until_allowed
from .views import InertJsonResponse, api_suggest, healthz, partial_rate_limited, readyz

logger = logging.getLogger(__name__)

# Orchestrators probe a process by its address, not a served host name, and these answers carry
# no URL that a forged Host header could poison: the host check is left out for them.
_PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {
    "autocomplete:healthz": healthz,
    "autocomplete:readyz": readyz,
}


def app_path(name: str) -> str | None:
    """The path_info of the app's URL `name` wherever the site mounts the app; None where it does not."""
    try:
        url = reverse(name)
    except NoReverseMatch:
        return None
    # reverse() includes the script prefix (SCRIPT_NAME) that path_info leaves out.
    return "/" + url.removeprefix(get_script_prefix())


class SuggestFastPathMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # Read from the URLconf on the first request (it may not be loadable yet while the
        # middleware chain is built), then kept, per script prefix, for the process's life.
        self._paths: dict[str, tuple[dict[str, Callable[[HttpRequest], HttpResponse]], str | None, str | None]] = {}

    def _fast_paths(self) -> tuple[dict[str, Callable[[HttpRequest], HttpResponse]], str | None, str | None]:
        prefix = get_script_prefix()
        if prefix not in self._paths:
            probes = {path: view for name, view in _PROBES.items() if (path := app_path(name)) is not None}
            self._paths[prefix] = (probes, app_path("autocomplete:api-suggest"), app_path("autocomplete:suggest"))
        return self._paths[prefix]

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        probes, api_path, partial_path = self._fast_paths()
        probe = probes.get(path)
        if probe is not None:
            response = probe(request)
        elif path == api_path:
            # CommonMiddleware would have validated the Host header; a bad one still gets its 400,
            # as JSON like every other answer of the API.
            try:
                request.get_host()
            except DisallowedHost:
                logger.warning("Refused the suggest API for a disallowed Host header")
                return InertJsonResponse({"error": "Bad request: this host name is not served here."}, status=400)
            response = api_suggest(request)
        elif path == partial_path:
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
