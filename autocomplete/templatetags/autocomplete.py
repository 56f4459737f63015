"""`{% load autocomplete %}`: the search box for any template, and the highlighting of suggestions."""

from __future__ import annotations

import html

from django import template
from django.utils.safestring import SafeString, mark_safe

from embeddings.highlight import match_spans

register = template.Library()


@register.filter
def highlight(text: str, query: str) -> SafeString:
    """`text` escaped, with the words that match `query` wrapped in <mark>."""
    parts: list[str] = []
    last = 0
    for start, end in match_spans(query, text):
        parts += [html.escape(text[last:start]), "<mark>", html.escape(text[start:end]), "</mark>"]
        last = end
    parts.append(html.escape(text[last:]))
    # Every piece of `text` went through html.escape (quotes too, as Django's escape does); the
    # only markup added is <mark> itself.
    return mark_safe("".join(parts))  # noqa: S308
