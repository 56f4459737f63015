"""A host project's urls for the browser tests: the app under a prefix, and a page of the host's own
that shows the box through the template tag."""

from __future__ import annotations

from django.conf import settings
from django.contrib.staticfiles.views import serve
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.urls import URLPattern, URLResolver, include, path, re_path

HOST_PAGE = engines["django"].from_string(
    """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Example Ltd – help</title></head>
<body><main><h1>How can we help?</h1>
{% load autocomplete %}
{% autocomplete_box corpus="box" label="Search our help" placeholder="e.g. cancel my plan" %}
</main></body>
</html>"""
)


def host_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse(HOST_PAGE.render({}, request))


urlpatterns: list[URLPattern | URLResolver] = [
    path("autocomplete/", include("autocomplete.urls")),
    path("help/", host_page),
    re_path(rf"^{settings.STATIC_URL.lstrip('/')}(?P<path>.*)$", serve, {"insecure": True}),
]
