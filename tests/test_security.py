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
from django.contrib.auth.models import User
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


def test_the_key_make_demo_wrote_into_the_var_dir_is_used_when_the_variable_is_unset(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    key = secrets.token_urlsafe(50)
    (Path(env["AUTOCOMPLETE_VAR_DIR"]) / "secret_key").write_text(key + "\n")
    result = run_python(env, "-c", "import config.settings as s; print(s.SECRET_KEY)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == key
    overridden = run_python(
        env | {"DJANGO_SECRET_KEY": "k" * 50}, "-c", "import config.settings as s; print(s.SECRET_KEY)"
    )
    assert overridden.stdout.strip() == "k" * 50  # the variable wins


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


# Admin sign-in throttling (django-axes, with the limits in config/settings.py)


@pytest.fixture
def admin_user(db: None) -> User:
    return User.objects.create_superuser("admin", password="correct horse")


def sign_in(client: Client, username: str, password: str, address: str = "203.0.113.7") -> Any:
    """The admin's own login form, fetched and posted back filled in, as a browser does."""
    form = client.get(LOGIN_URL, REMOTE_ADDR=address).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    fields = {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password}
    return client.post(LOGIN_URL, fields, REMOTE_ADDR=address)


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The usernames whose password was checked: a refused attempt must not cost a hash."""
    checked: list[str] = []
    original = User.check_password

    def counting(user: User, raw_password: str) -> bool:
        checked.append(user.username)
        return original(user, raw_password)

    monkeypatch.setattr(User, "check_password", counting)
    return checked


def test_repeated_failures_lock_the_address_and_username_out(
    settings: Any, admin_user: User, password_checks: list[str]
) -> None:
    client = Client(enforce_csrf_checks=True)
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = sign_in(client, "admin", "wrong")
        assert response.status_code == 200 and "Please enter the correct username" in response.content.decode()
    response = sign_in(client, "admin", "wrong")  # the limit-th failure is refused
    assert response.status_code == 429
    checked_before = len(password_checks)
    # Even the right password is refused now, without the password being checked at all.
    response = sign_in(client, "admin", "correct horse")
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed sign-ins" in page and "15 minutes" in page and "axes_reset_username" in page
    assert len(password_checks) == checked_before
    assert "_auth_user_id" not in client.session
    # The username is locked from another address too, and the address for another username.
    assert sign_in(Client(), "admin", "correct horse", address="198.51.100.9").status_code == 429
    User.objects.create_user("editor", password="another horse", is_staff=True)
    assert sign_in(Client(), "editor", "another horse").status_code == 429


def test_other_visitors_and_accounts_are_not_held_up(
    settings: Any, admin_user: User, client: Client, small_corpus: Corpus
) -> None:
    attacker = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT + 2):
        sign_in(attacker, "admin", "wrong")
    assert client.get("/api/suggest", {"q": "password"}).status_code == 200
    assert client.get("/", {"q": "password"}).status_code == 200
    User.objects.create_user("editor", password="another horse", is_staff=True)
    response = sign_in(Client(), "editor", "another horse", address="198.51.100.9")
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_a_successful_sign_in_forgets_earlier_failures(settings: Any, admin_user: User) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "admin", "wrong")
    assert sign_in(client, "admin", "correct horse").status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "admin", "wrong").status_code == 200


def test_behind_a_trusted_proxy_one_visitors_failures_lock_only_that_visitor(configure, admin_user: User) -> None:
    # Every request reaches the app from the proxy's address; the visitor is the address it names.
    configure(TRUSTED_PROXIES=("10.0.0.1",))
    attacker, visitor = Client(HTTP_X_FORWARDED_FOR="203.0.113.50"), Client(HTTP_X_FORWARDED_FOR="198.51.100.9")
    User.objects.create_user("editor", password="another horse", is_staff=True)
    for _ in range(6):
        sign_in(attacker, "admin", "wrong", address="10.0.0.1")
    assert sign_in(attacker, "editor", "another horse", address="10.0.0.1").status_code == 429
    assert sign_in(visitor, "editor", "another horse", address="10.0.0.1").status_code == 302


def test_probes_over_plain_http_are_not_redirected_to_https(settings: Any, client: Client) -> None:
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/", secure=False).status_code == 301
    assert client.get("/healthz", secure=False).status_code == 200
