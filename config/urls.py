from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import URLPattern, URLResolver, include, path, re_path

from autocomplete.conf import app_settings

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("", include("autocomplete.urls")),
]

if app_settings().serve_static:
    # The embedded default serves its own static files (no web server in front of it); a
    # deployment behind nginx or a CDN turns this off and runs collectstatic.
    static_prefix = settings.STATIC_URL.lstrip("/")
    urlpatterns += [re_path(rf"^{static_prefix}(?P<path>.*)$", serve, {"insecure": True})]
