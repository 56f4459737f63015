from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.staticfiles.views import serve
from django.urls import include, path, re_path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("autocomplete.urls")),
]

if settings.AUTOCOMPLETE_SERVE_STATIC:
    # The embedded default serves its own static files (no web server in front of it); a
    # deployment behind nginx or a CDN turns this off and runs collectstatic.
    static_prefix = settings.STATIC_URL.lstrip("/")
    urlpatterns += [re_path(rf"^{static_prefix}(?P<path>.*)$", serve, {"insecure": True})]
