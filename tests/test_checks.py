"""System checks catch a misconfigured encoder setup at start-up."""

from __future__ import annotations

from autocomplete.checks import check_encoder_settings


def test_default_settings_pass() -> None:
    assert check_encoder_settings() == []


def test_unknown_default_or_fallback_encoder(settings) -> None:  # type: ignore[no-untyped-def]
    settings.AUTOCOMPLETE_DEFAULT_ENCODER = "bert-huge"
    settings.AUTOCOMPLETE_FALLBACK_ENCODER = "nope"
    errors = check_encoder_settings()
    assert [error.id for error in errors] == ["autocomplete.E002", "autocomplete.E002"]
    assert "AUTOCOMPLETE_DEFAULT_ENCODER is 'bert-huge'" in errors[0].msg


def test_incomplete_custom_encoder(settings) -> None:  # type: ignore[no-untyped-def]
    settings.AUTOCOMPLETE_ENCODERS = {"custom": {"PATH": "/models/custom"}}
    (error,) = check_encoder_settings()
    assert error.id == "autocomplete.E001"
    assert "needs NAME, HUB_ID and DIMENSION" in error.msg
