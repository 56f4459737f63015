"""Which stored urls may become links: http(s) only, whatever the database holds.

Uploads already refuse other schemes, but the admin's URL field (Django's, which allows ftp) and
direct database edits can store any text, so every place that renders a link asks here.
"""

from __future__ import annotations

import re

from django.core.validators import URLValidator

# Anchored at the very start: a browser strips leading spaces and controls, so " javascript:" must fail.
_HTTP_URL = re.compile(r"https?://", re.IGNORECASE)


def link_url(value: str) -> str:
    """`value` when it is an http(s) address, else the empty string (not a link at all)."""
    return value if _HTTP_URL.match(value) else ""


class HttpURLValidator(URLValidator):
    """Django's URL validator, limited to http and https."""

    schemes = ["http", "https"]
