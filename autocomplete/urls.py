from __future__ import annotations

from django.urls import path

from . import views

# Names are reversed as autocomplete:<name>, so a site may mount the app under any prefix beside its own URLs.
app_name = "autocomplete"
urlpatterns = [
    path("", views.search_page, name="search"),
    path("suggest", views.suggest_partial, name="suggest"),
    path("api/suggest", views.api_suggest, name="api-suggest"),
    path("api/events", views.api_events, name="api-events"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("api/openapi.json", views.api_description, name="api-description"),
]
