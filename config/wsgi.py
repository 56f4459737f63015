"""WSGI entry point (gunicorn config.wsgi): Django, one request computing at a time per process."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

_GATED_METHODS = frozenset({"GET", "HEAD"})
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class OneAtATime:
    """Let one GET or HEAD into the app at a time; the others wait their turn in their threads.

    gunicorn's threads exist so that a slow or stalled client holds a thread, not the process
    (config/gunicorn.py). A suggestion is CPU-bound, so letting the threads compute together only
    interleaves them under the GIL and stretches every answer; one at a time, each answer takes what
    it takes alone, as with one sync worker. The gate opens when the app has returned its response,
    so sending it, and reading the next request, never hold it. Requests with a body (uploads,
    admin forms) pass beside it: the app reads their body as it arrives, and a slow sender must not
    hold every keystroke of the process.
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self._gate = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in _GATED_METHODS:
            return self.app(environ, start_response)
        with self._gate:
            return self.app(environ, start_response)


application = OneAtATime(get_wsgi_application())
