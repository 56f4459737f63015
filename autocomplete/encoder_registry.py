"""The process's encoders, built from settings, and the open fallback rule."""

from __future__ import annotations

import logging
import threading

from embeddings.encoders import (
    Encoder,
    EncoderRegistry,
    EncoderUnavailableError,
    model_location,
    specs_from_settings,
)

from .conf import AutocompleteSettings, app_settings

logger = logging.getLogger(__name__)

_lock = threading.Lock()
# The registry and the settings it was built from: one registry per process, so each model loads
# once, rebuilt only when a setting it depends on changes (tests override settings).
_current: tuple[AutocompleteSettings, tuple[object, ...], EncoderRegistry] | None = None


def _registry_inputs(conf: AutocompleteSettings) -> tuple[object, ...]:
    encoders = tuple(sorted((key, tuple(sorted(options.items()))) for key, options in conf.encoders.items()))
    return (encoders, conf.encoder_backend, conf.allow_download, conf.onnx_dir, conf.encoder_threads)


def encoder_registry() -> EncoderRegistry:
    """The registry of this process's settings."""
    global _current
    conf = app_settings()
    current = _current
    if current is not None and current[0] is conf:
        return current[2]
    with _lock:
        inputs = _registry_inputs(conf)
        if _current is None or _current[1] != inputs:
            specs = specs_from_settings(conf.encoders, default_backend=conf.encoder_backend)
            registry = EncoderRegistry(
                specs, allow_download=conf.allow_download, onnx_dir=conf.onnx_dir, threads=conf.encoder_threads
            )
        else:
            registry = _current[2]
        _current = (conf, inputs, registry)
        return registry


def encoder_for_indexing(key: str, *, allow_fallback: bool) -> Encoder:
    """Load `key`; when it cannot load and fallback is allowed, say so and use the fallback."""
    registry = encoder_registry()
    try:
        return registry.get(key)
    except EncoderUnavailableError as exc:
        fallback = app_settings().fallback_encoder
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
    if location == spec.hub_id and not app_settings().allow_download:
        return (
            f"{spec.name} has no local copy and downloads are off: run `python manage.py fetch_encoders "
            f"{spec.key} --to models/{spec.key}` on a connected machine, copy that folder here and set "
            f"{spec.env_var}=models/{spec.key}."
        )
    return None
