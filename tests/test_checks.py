"""System checks catch a misconfigured encoder setup at start-up."""

from __future__ import annotations

from autocomplete.checks import check_encoder_settings, check_host_project


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


def test_the_project_provides_what_the_app_needs() -> None:
    assert check_host_project() == []


def test_a_site_is_told_what_is_missing_with_the_fix(settings) -> None:
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_htmx"]
    settings.CACHES = {"default": settings.CACHES["default"]}
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "APP_DIRS": False, "DIRS": []}]
    errors = {error.id: error for error in check_host_project()}
    assert set(errors) == {"autocomplete.E005", "autocomplete.E006", "autocomplete.E007"}
    assert errors["autocomplete.E005"].hint == "Add 'django_htmx' to INSTALLED_APPS."
    assert "AUTOCOMPLETE['QUERY_CACHE'] names the cache 'query-embeddings'" in errors["autocomplete.E006"].msg
    assert "'APP_DIRS': True" in str(errors["autocomplete.E007"].hint)


def test_without_django_htmx_alone_only_that_is_named(settings) -> None:
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_htmx"]
    assert [error.id for error in check_host_project()] == ["autocomplete.E005"]
