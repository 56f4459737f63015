"""System checks: catch a misconfigured encoder setup at start-up, not on the first keystroke."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from embeddings.encoders import BACKENDS, UnknownEncoderError, specs_from_settings


@register()
def check_encoder_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    try:
        specs = specs_from_settings(
            settings.AUTOCOMPLETE_ENCODERS, default_backend=settings.AUTOCOMPLETE_ENCODER_BACKEND
        )
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
    for name in ("AUTOCOMPLETE_DEFAULT_ENCODER", "AUTOCOMPLETE_FALLBACK_ENCODER"):
        key = getattr(settings, name)
        if key and key not in specs:
            errors.append(
                Error(
                    f"{name} is '{key}', which is not in AUTOCOMPLETE_ENCODERS ({', '.join(sorted(specs))}).",
                    id="autocomplete.E002",
                )
            )
    return errors
