"""The app as another site gets it: the declared package, its wheel, and a site that installs it.

The slow test builds the wheel, installs it with every dependency into a new virtual environment
(nothing from this checkout or its environment), and runs a minimal Django project made here that
mounts the app under "autocomplete/".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            requirement = Requirement(line)
            (specifier,) = requirement.specifier
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_every_declared_dependency_is_pinned_within_its_range_for_the_demo_and_ci() -> None:
    """What CI tests (requirements.txt) is a set a site installing the package could get."""
    pins = _pins(ROOT / "requirements.txt") | _pins(ROOT / "constraints.txt")
    declared = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    declared += [
        Requirement(text) for extra in PYPROJECT["project"]["optional-dependencies"].values() for text in extra
    ]
    outside = {
        str(requirement): pins.get(name)
        for requirement in declared
        if (name := canonicalize_name(requirement.name)) not in pins or pins[name] not in requirement.specifier
    }
    assert outside == {}


def test_the_package_holds_the_apps_and_not_the_project() -> None:
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["autocomplete", "embeddings"]
    # Every app folder of templates/ and static/, and only those, is copied into the app's package.
    folders = {
        str(path.relative_to(ROOT)) for top in ("templates", "static") for path in ROOT.glob(f"{top}/**/autocomplete")
    }
    assert wheel["force-include"] == {folder: f"autocomplete/{folder}" for folder in folders}


SITE_SETTINGS = """
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECRET_KEY = "a-site-that-installs-the-app-test-only-0123456789abcdefghijklmnopqrstuvwxyz"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "autocomplete",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "site_urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": HERE / "db.sqlite3"}}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
STATIC_URL = "/static/"
CACHES = {name: {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": name}
          for name in ("default", "query-embeddings")}
AUTOCOMPLETE = {"DEFAULT_ENCODER": "minilm", "VAR_DIR": HERE / "var"}
"""

SITE_URLS = """
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("autocomplete/", include("autocomplete.urls")),
]
"""

# Run inside the site's environment: what a visitor, an API client and an admin get there.
SITE_PROBE = """
import json
import django
django.setup()
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.test import Client

import autocomplete

client = Client()
api = client.get("/autocomplete/api/suggest", {"q": "how do I reset my pasword", "corpus": "help"})
page = client.get("/autocomplete/")
partial = client.get("/autocomplete/suggest", {"q": "refund", "corpus": "help"}, HTTP_HX_REQUEST="true")
description = client.get("/autocomplete/api/openapi.json")
admin = Client()
admin.force_login(User.objects.create_superuser("owner", "owner@example.com", "pw-for-this-test-only"))
changelist = admin.get("/admin/autocomplete/corpus/")
print(json.dumps({
    "package": autocomplete.__file__,
    "static": finders.find("autocomplete/combobox.js"),
    "api": [api.status_code, api.json()],
    "page": [page.status_code, page.content.decode()],
    "partial": [partial.status_code, partial.content.decode()],
    "servers": description.json().get("servers"),
    "admin": [changelist.status_code, changelist.content.decode()],
}))
"""

CORPUS = """question,answer
How do I reset my password?,Use the "Forgot password" link on the sign-in page.
How can I get a refund?,Refunds are made within 14 days from the orders page.
Where can I download my invoices?,Invoices are under Billing in your account.
How do I delete my account?,Write to support from the address on the account.
"""


def _run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_a_site_installs_the_wheel_and_serves_the_box_the_api_and_the_admin(tmp_path: Path) -> None:
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", ROOT], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "autocomplete/migrations/0001_initial.py",
        "autocomplete/openapi.json",
        "autocomplete/templates/autocomplete/search.html",
        "autocomplete/templates/admin/autocomplete/corpus/upload.html",
        "autocomplete/static/autocomplete/combobox.js",
        "embeddings/encoders.py",
    } <= names
    assert not any(name.startswith(("config/", "tests/")) for name in names)

    # A new environment with every dependency installed from the wheel's own declarations; only the
    # torch pin is passed, as the README says, so that pip takes the CPU build.
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    pip: list[str | Path] = [python, "-m", "pip", "install", "-q", "-c", ROOT / "constraints.txt"]
    _run([*pip, "torch==2.13.0"], cwd=tmp_path)
    _run([*pip, wheel], cwd=tmp_path)
    _run([python, "-m", "pip", "check"], cwd=tmp_path)

    site = tmp_path / "site"
    site.mkdir()
    (site / "site_settings.py").write_text(SITE_SETTINGS)
    (site / "site_urls.py").write_text(SITE_URLS)
    (site / "faq.csv").write_text(CORPUS)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DJANGO_", "AUTOCOMPLETE_"))}
    env |= {"DJANGO_SETTINGS_MODULE": "site_settings", "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    manage: list[str | Path] = [python, "-m", "django"]
    _run([*manage, "check", "--fail-level", "WARNING"], cwd=site, env=env)
    _run([*manage, "migrate", "--noinput"], cwd=site, env=env)
    _run([*manage, "ingest", "faq.csv", "--corpus", "help", "--name", "Help", "--encoder", "minilm"], cwd=site, env=env)
    seen = json.loads(_run([python, "-c", SITE_PROBE], cwd=site, env=env))

    # The app, its templates and static files come from the installed wheel, not from this checkout.
    site_packages = str(environment / "lib")
    assert seen["package"].startswith(site_packages)
    assert seen["static"].startswith(site_packages)
    status, answer = seen["api"]
    assert status == 200, answer
    assert answer["corpus"] == "help" and answer["encoder"] == "minilm"
    assert answer["suggestions"][0]["question"] == "How do I reset my password?"
    status, page = seen["page"]
    assert status == 200
    assert 'action="/autocomplete/"' in page and 'hx-get="/autocomplete/suggest"' in page
    assert "/static/autocomplete/combobox.js" in page and "/static/django_htmx/htmx" in page
    status, partial = seen["partial"]
    assert status == 200 and "How can I get a <mark>refund</mark>?" in partial
    assert seen["servers"] == [{"url": "/autocomplete", "description": "Where this site mounts the app."}]
    status, changelist = seen["admin"]
    assert status == 200 and "Help" in changelist
