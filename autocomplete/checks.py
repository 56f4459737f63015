"""System checks: catch a misconfigured app, or a site missing what it needs, at start-up, not on a keystroke."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured
from django.template import TemplateDoesNotExist
from django.template.loader import get_template

from embeddings.encoders import BACKENDS, UnknownEncoderError, specs_from_settings

from .conf import app_settings


@register()
def check_encoder_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    try:
        conf = app_settings()
    except (ImproperlyConfigured, TypeError, ValueError) as exc:
        return [Error(f"settings.AUTOCOMPLETE cannot be read: {exc}", id="autocomplete.E004")]
    try:
        specs = specs_from_settings(conf.encoders, default_backend=conf.encoder_backend)
    except UnknownEncoderError as exc:
        return [Error(str(exc), id="autocomplete.E001")]
    errors = [
        Error(
            f"Encoder '{spec.key}' has backend '{spec.backend}'; use one of {', '.join(BACKENDS)}.",
            id="autocomplete.E003",
        )
        for spec in specs.values()
        if spec.backend not in BACKENDS
    ]
    for name, key in (("DEFAULT_ENCODER", conf.default_encoder), ("FALLBACK_ENCODER", conf.fallback_encoder)):
        if key and key not in specs:
            errors.append(
                Error(
                    f"AUTOCOMPLETE['{name}'] is '{key}', which is not in AUTOCOMPLETE['ENCODERS'] "
                    f"({', '.join(sorted(specs))}).",
                    id="autocomplete.E002",
                )
            )
    return errors


@register()
def check_host_project(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """What a site that installs the app must provide beside it: each error names the fix."""
    errors: list[Error] = []
    if not apps.is_installed("django_htmx"):
        errors.append(
            Error(
                "The search box loads htmx through django-htmx's template tags, and 'django_htmx' is not installed.",
                hint="Add 'django_htmx' to INSTALLED_APPS.",
                id="autocomplete.E005",
            )
        )
    try:
        conf = app_settings()
    except (ImproperlyConfigured, TypeError, ValueError):
        return errors  # Reported by check_encoder_settings.
    for name, alias in (
        ("QUERY_CACHE", conf.query_cache),
        ("RATE_LIMIT_CACHE", conf.rate_limit_cache if conf.rate_limit else ""),
        ("CATALOG_CHANGE_CACHE", conf.catalog_change_cache),
    ):
        if alias and alias not in settings.CACHES:
            errors.append(
                Error(
                    f"AUTOCOMPLETE['{name}'] names the cache '{alias}', which is not in CACHES.",
                    hint=f"Add a CACHES entry '{alias}' (README, \"Use it in your site\") or set "
                    f"AUTOCOMPLETE['{name}'] to a cache you have"
                    + (" ('' turns the query cache off)." if name == "QUERY_CACHE" else "."),
                    id="autocomplete.E006",
                )
            )
    try:
        get_template("autocomplete/search.html")
    except TemplateDoesNotExist:
        errors.append(
            Error(
                "The app's templates cannot be found: no template engine reads installed apps' templates.",
                hint="Set 'APP_DIRS': True in the DjangoTemplates entry of TEMPLATES.",
                id="autocomplete.E007",
            )
        )
    return errors
