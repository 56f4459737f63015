"""`{% load autocomplete %}`: the search box for any template, and the highlighting of suggestions."""

from __future__ import annotations

import html
from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from autocomplete.conf import app_settings
from autocomplete.search import SearchError, resolve_corpus, resolve_encoder
from embeddings.highlight import match_spans

register = template.Library()


@register.inclusion_tag("autocomplete/_box.html")
def autocomplete_box(
    corpus: str = "",
    *,
    encoder: str = "",
    label: str = "",
    placeholder: str = "",
    tags: str = "",
    assets: bool = True,
) -> dict[str, Any]:
    """The search page's box for one public corpus, in any template of a project that includes the app's urls.

    `assets=False` leaves out the box's stylesheet and scripts (htmx included) for a page that loads them itself.
    A corpus or encoder that cannot answer renders the box with the reason rather than breaking the page.
    """
    context: dict[str, Any] = {
        "corpora": [],
        "selected_encoder": encoder,
        "label": label,
        "placeholder": placeholder,
        "tags": tags,
        "assets": assets,
        "query": "",
        "max_query_length": app_settings().max_query_length,
        "events": app_settings().events,
        "settle_ms": round(app_settings().settle_seconds * 1000),
    }
    try:
        entry = resolve_corpus(corpus or None, public_only=True)
        if encoder:
            resolve_encoder(entry, encoder)
    except SearchError as exc:
        return context | {"box_error": str(exc)}
    return context | {"corpus": entry}


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
