"""Deploy posture: the documented production settings pass Django's deploy check, a missing or public
secret key stops the process, every answer carries the security headers, admin sign-in is throttled."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from autocomplete.models import Corpus
from autocomplete.security_headers import CONTENT_SECURITY_POLICY

ROOT = Path(__file__).resolve().parent.parent
LOGIN_URL = "/admin/login/?next=/admin/"


def clean_env(var_dir: Path, **variables: str) -> dict[str, str]:
    """This process's environment without any Django or app setting, plus `variables`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "AUTOCOMPLETE_"))}
    return env | {"DJANGO_SETTINGS_MODULE": "config.settings", "AUTOCOMPLETE_VAR_DIR": str(var_dir)} | variables


def documented_production_variables() -> dict[str, str]:
    """The `export NAME=VALUE` lines of the README's "Production" paragraph, with a fresh secret key."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    paragraph = readme.split("- **Production**", 1)[1].split("\n- ", 1)[0]
    variables = dict(re.findall(r"^\s*export (DJANGO_[A-Z_]+)=(\S+)", paragraph, flags=re.MULTILINE))
    assert "DJANGO_SECRET_KEY" in variables, "the Production paragraph no longer sets a secret key"
    return variables | {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)}


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


# Deploy check


def test_the_documented_production_configuration_passes_the_deploy_check(tmp_path: Path) -> None:
    variables = documented_production_variables()
    assert variables.keys() >= {"DJANGO_ALLOWED_HOSTS", "DJANGO_HTTPS", "DJANGO_CSRF_TRUSTED_ORIGINS"}
    result = run_python(clean_env(tmp_path, **variables), "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_without_https_the_deploy_check_names_what_is_missing(tmp_path: Path) -> None:
    variables = documented_production_variables()
    del variables["DJANGO_HTTPS"]
    result = run_python(clean_env(tmp_path, **variables), "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


# Secret key


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "   ",
        "insecure-demo-key-set-DJANGO_SECRET_KEY-in-production",
        "insecure-debug-only-key-set-DJANGO_SECRET_KEY",
    ],
    ids=["unset", "empty", "blank", "old-demo-value", "debug-only-value"],
)
def test_without_debug_a_missing_or_public_secret_key_stops_the_process(tmp_path: Path, key: str | None) -> None:
    env = clean_env(tmp_path) | ({} if key is None else {"DJANGO_SECRET_KEY": key})
    result = run_python(env, "-c", "import config.settings")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "DJANGO_SECRET_KEY" in result.stderr and "secrets.token_urlsafe" in result.stderr  # names the fix


def test_a_secret_key_of_its_own_starts(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(50)
    result = run_python(
        clean_env(tmp_path, DJANGO_SECRET_KEY=key), "-c", "import config.settings as s; print(s.SECRET_KEY, s.DEBUG)"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [key, "False"]


def test_debug_starts_without_a_key_on_a_development_machine(tmp_path: Path) -> None:
    result = run_python(clean_env(tmp_path, DJANGO_DEBUG="1"), "-c", "import config.settings")
    assert result.returncode == 0, result.stderr


# Security headers


def assert_security_headers(response: Any) -> None:
    assert response["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"


def test_the_policy_allows_only_this_sites_scripts_and_styles() -> None:
    directives = dict(directive.split(" ", 1) for directive in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/?q=password", 200),  # the search page
        ("/suggest?q=password", 200),  # the htmx partial
        ("/api/suggest?q=password", 200),  # answered by the fast-path middleware
        ("/api/suggest?q=password&k=99", 400),  # a JSON error from the fast path
        ("/static/autocomplete/combobox.js", 200),  # a static file served by the app
        ("/static/django_htmx/htmx-2.min.js", 200),
        ("/no-such-page", 404),
        (LOGIN_URL, 200),  # the admin
        ("/admin/", 302),
    ],
)
def test_every_kind_of_answer_carries_the_security_headers(
    client: Client, small_corpus: Corpus, url: str, status: int
) -> None:
    response = client.get(url, headers={"HX-Request": "true"} if url.startswith("/suggest") else {})
    assert response.status_code == status
    assert_security_headers(response)


@pytest.mark.django_db
def test_admin_pages_signed_in_carry_the_security_headers(admin_client: Client, small_corpus: Corpus) -> None:
    for url in ("/admin/", "/admin/autocomplete/corpus/", f"/admin/autocomplete/corpus/{small_corpus.pk}/change/"):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert_security_headers(response)


def test_templates_hold_no_inline_script_style_or_event_handler() -> None:
    # The policy refuses them: behaviour lives in static/*.js, looks in static/*.css.
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.IGNORECASE)
    offenders = [
        f"{path.relative_to(ROOT)}: {match.group(0)}"
        for path in (ROOT / "templates").rglob("*.html")
        for match in inline.finditer(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
