"""System checks: catch a misconfigured app at start-up, not on the first keystroke."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, register
from django.core.exceptions import ImproperlyConfigured

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
