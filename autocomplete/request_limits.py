"""Refuse request bodies over the limits before anything reads them: 413 with a JSON error.

Django reads a body only when something asks for it (CSRF checks read a POST's form), so this
middleware, first in the chain, compares the declared Content-Length with the limits at no cost.
Only the admin upload needs a large body, and only a signed-in admin can make one: a request
without a session cookie is held to a limit that fits any other form.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from .conf import app_settings

# Room for the upload form's other fields, the CSRF token and the multipart boundaries.
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class RequestBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        refusal = body_refusal(request)
        return refusal if refusal is not None else self.get_response(request)


def body_refusal(request: HttpRequest) -> HttpResponse | None:
    """A 413 answer when the declared body is over the limit that applies; None otherwise."""
    length = _declared_length(request)
    if not length:
        return None
    conf = app_settings()
    if settings.SESSION_COOKIE_NAME not in request.COOKIES and length > conf.max_anonymous_body_bytes:
        message = (
            f"The request body is {length:,} bytes; without a signed-in session the limit is "
            f"{conf.max_anonymous_body_bytes:,} (AUTOCOMPLETE_MAX_ANONYMOUS_BODY_BYTES). Sign in to upload files."
        )
    elif length > conf.max_upload_bytes + MULTIPART_OVERHEAD_BYTES:
        message = (
            f"The request body is {length:,} bytes; uploads are limited to {conf.max_upload_bytes:,} "
            "(AUTOCOMPLETE_MAX_UPLOAD_BYTES). Split the file, or raise the limit."
        )
    else:
        return None
    return JsonResponse({"error": message}, status=413)


def _declared_length(request: HttpRequest) -> int:
    # Django itself reads no body when the header is missing or not a number.
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0
