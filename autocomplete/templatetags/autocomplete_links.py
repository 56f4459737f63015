"""`{{ url|safe_url }}`: the url when it is http(s), else nothing, so no other scheme becomes a link."""

from __future__ import annotations

from django import template

from autocomplete.links import link_url

register = template.Library()
register.filter("safe_url", link_url)
