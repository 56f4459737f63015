"""The process's encoder registry, built from settings, and the open fallback rule."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from embeddings.encoders import (
    Encoder,
    EncoderRegistry,
    EncoderUnavailableError,
    model_location,
    specs_from_settings,
)

logger = logging.getLogger(__name__)


@functools.cache
def encoder_registry() -> EncoderRegistry:
    """One registry per process, so each model loads once."""
    specs = specs_from_settings(settings.AUTOCOMPLETE_ENCODERS, default_backend=settings.AUTOCOMPLETE_ENCODER_BACKEND)
    return EncoderRegistry(
        specs,
        allow_download=settings.AUTOCOMPLETE_ALLOW_DOWNLOAD,
        onnx_dir=Path(settings.AUTOCOMPLETE_ONNX_DIR),
        threads=settings.AUTOCOMPLETE_ENCODER_THREADS,
    )


_REGISTRY_SETTINGS = {"AUTOCOMPLETE_ALLOW_DOWNLOAD", "AUTOCOMPLETE_ONNX_DIR"}


@receiver(setting_changed)
def _reset_registry(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("AUTOCOMPLETE_ENCODER") or setting in _REGISTRY_SETTINGS:
        encoder_registry.cache_clear()


def encoder_for_indexing(key: str, *, allow_fallback: bool) -> Encoder:
    """Load `key`; when it cannot load and fallback is allowed, say so and use the fallback."""
    registry = encoder_registry()
    try:
        return registry.get(key)
    except EncoderUnavailableError as exc:
        fallback = settings.AUTOCOMPLETE_FALLBACK_ENCODER
        if not allow_fallback or not fallback or fallback == key:
            raise
        logger.warning("%s Falling back to encoder '%s'.", exc, fallback)
        return registry.get(fallback)


def unavailable_reason(key: str) -> str | None:
    """Why `key` cannot load here, found without loading it (cheap enough for a form), or None."""
    spec = encoder_registry().spec(key)
    try:
        location = model_location(spec)
    except EncoderUnavailableError as exc:
        return str(exc)
    if location == spec.hub_id and not settings.AUTOCOMPLETE_ALLOW_DOWNLOAD:
        return (
            f"{spec.name} has no local copy and downloads are off: run `python manage.py fetch_encoders "
            f"{spec.key} --to models/{spec.key}` on a connected machine, copy that folder here and set "
            f"{spec.env_var}=models/{spec.key}."
        )
    return None
