"""System checks catch a misconfigured encoder setup at start-up."""

from __future__ import annotations

from autocomplete.checks import check_encoder_settings


def test_default_settings_pass() -> None:
    assert check_encoder_settings() == []


def test_unknown_default_or_fallback_encoder(configure) -> None:
    configure(DEFAULT_ENCODER="bert-huge")
    configure(FALLBACK_ENCODER="nope")
    errors = check_encoder_settings()
    assert [error.id for error in errors] == ["autocomplete.E002", "autocomplete.E002"]
    assert "AUTOCOMPLETE['DEFAULT_ENCODER'] is 'bert-huge'" in errors[0].msg


def test_incomplete_custom_encoder(configure) -> None:
    configure(ENCODERS={"custom": {"PATH": "/models/custom"}})
    (error,) = check_encoder_settings()
    assert error.id == "autocomplete.E001"
    assert "needs NAME, HUB_ID and DIMENSION" in error.msg


def test_an_unknown_setting_is_refused_at_start_up(configure) -> None:
    configure(ANN_TRESHOLD=5)
    (error,) = check_encoder_settings()
    assert error.id == "autocomplete.E004"
    assert "Unknown AUTOCOMPLETE setting(s) ANN_TRESHOLD" in error.msg
