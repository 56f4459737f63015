from __future__ import annotations

from django.apps import AppConfig


class AutocompleteConfig(AppConfig):
    name = "autocomplete"
    verbose_name = "Semantic autocomplete"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connect the signal receivers and system checks these modules define.
        from . import builds, checks, conf, query_encoders  # noqa: F401
