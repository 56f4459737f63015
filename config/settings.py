"""Settings for the embedded default: SQLite, local index files, no extra services.

Every deployment knob is an environment variable read here (through `config.environment`), so the
same code serves the demo, the test suite and a deployment. The app's own settings are one dict,
`AUTOCOMPLETE`, parsed once into a typed object by `autocomplete/conf.py`, which holds the defaults.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from .environment import env_bool, env_float, env_int, env_json, env_path, env_str

# Lets the generic classes of django-stubs (ModelAdmin[Corpus], QuerySet[QAPair]) be subscripted at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = env_path("AUTOCOMPLETE_VAR_DIR") or BASE_DIR / "var"
# The database and index files live here unless their own settings say otherwise.
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = bool(env_bool("DJANGO_DEBUG"))
ALLOWED_HOSTS = (env_str("DJANGO_ALLOWED_HOSTS") or "127.0.0.1,localhost,testserver").split(",")

# The key signs sessions, CSRF tokens, password-reset links and the stored lexical index files, so a
# published one lets anyone forge them: without debug, a missing or public key stops the process.
_DEBUG_ONLY_SECRET_KEY = "insecure-debug-only-key-set-DJANGO_SECRET_KEY"  # noqa: S105 - public on purpose
_PUBLIC_SECRET_KEYS = frozenset({"", _DEBUG_ONLY_SECRET_KEY, "insecure-demo-key-set-DJANGO_SECRET_KEY-in-production"})
# `make demo` writes a random key once into var/secret_key (mode 0600): read it when the variable is
# unset, so manage.py commands on the demo machine need no export.
_KEY_FILE = VAR_DIR / "secret_key"
SECRET_KEY = (env_str("DJANGO_SECRET_KEY") or (_KEY_FILE.read_text() if _KEY_FILE.is_file() else "")).strip()
if SECRET_KEY in _PUBLIC_SECRET_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is unset, empty or a published demo value, and DEBUG is off: set it to a "
            "long random secret kept out of the repository, e.g. "
            "export DJANGO_SECRET_KEY=\"$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')\" "
            "(`make demo` makes one for itself in var/secret_key; DJANGO_DEBUG=1 is for a development machine only)."
        )
    SECRET_KEY = _DEBUG_ONLY_SECRET_KEY

# HTTPS: on where TLS reaches the app (directly or through a proxy that gunicorn trusts to say so).
_HTTPS = bool(env_bool("DJANGO_HTTPS"))
SECURE_SSL_REDIRECT = _HTTPS
# Orchestrators probe a process over plain HTTP on its own address: a redirect would fail the probe.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = _HTTPS
CSRF_COOKIE_SECURE = _HTTPS
# Browsers keep to HTTPS for this long once told: a first rollout may start with a few minutes.
_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS")
SECURE_HSTS_SECONDS = (365 * 24 * 3600 if _HSTS_SECONDS is None else _HSTS_SECONDS) if _HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = _HTTPS
SECURE_HSTS_PRELOAD = _HTTPS
# Origins (scheme and host) from which a form POST is accepted, e.g. the public https:// name behind a proxy.
CSRF_TRUSTED_ORIGINS = [origin for origin in (env_str("DJANGO_CSRF_TRUSTED_ORIGINS") or "").split(",") if origin]
# SecurityMiddleware's own defaults, stated because tests and the deploy check rely on them.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "django_tasks",
    "django_tasks_db",
    "axes",
    "autocomplete",
]

MIDDLEWARE = [
    # First, so that every answer, the fast path's and a refused body's included, carries the
    # Content-Security-Policy and (SecurityMiddleware, next) nosniff and the referrer policy.
    "autocomplete.security_headers.SecurityHeadersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything that reads the body: one over the limits is refused unread.
    "autocomplete.request_limits.RequestBodyLimitMiddleware",
    # Answers /api/suggest before the session, CSRF, auth and messages middleware below (see module).
    "autocomplete.middleware.SuggestFastPathMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: turns a refused login into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def database_from_url(url: str | None, sqlite_path: Path) -> dict[str, Any]:
    """The default database: `url` parsed by dj-database-url, or the SQLite file when it is unset."""
    database: dict[str, Any] = (
        dict(dj_database_url.parse(url)) if url else {"ENGINE": "django.db.backends.sqlite3", "NAME": str(sqlite_path)}
    )
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # WAL lets readers keep answering while an ingest holds the write lock.
        # IMMEDIATE takes the write lock when a transaction begins, so concurrent ingest jobs
        # queue up instead of failing on a stale snapshot.
        database["OPTIONS"] = {
            "init_command": "PRAGMA journal_mode=WAL;",
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
        }
    elif database["ENGINE"] == "django.db.backends.postgresql":
        # A connection kept for a minute spares each keystroke's request a new server connection
        # (a process and an authentication on the server); idle ones still go back within the minute.
        database["CONN_MAX_AGE"] = 60
        # A kept connection that a server restart or failover broke is replaced before a request
        # uses it, instead of failing that request.
        database["CONN_HEALTH_CHECKS"] = True
        # A server that does not answer fails the request in seconds rather than holding a worker.
        database["OPTIONS"] = {"connect_timeout": 10, **database.get("OPTIONS", {})}
    return database


# Several machines share one database server: DATABASE_URL=postgres://user:password@host:5432/name.
DATABASES = {
    "default": database_from_url(
        env_str("DATABASE_URL"), env_path("AUTOCOMPLETE_DATABASE_PATH") or VAR_DIR / "db.sqlite3"
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins from one address, or for one
# username, further attempts are refused for AXES_COOLOFF_TIME without checking the password, so
# guessing costs the server nothing. Counted in the database, so every worker and machine agrees.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/login_throttled.html"
# The visitor's address as the rate limit sees it: X-Forwarded-For only from trusted proxies, so
# behind a proxy one visitor's failures do not lock everyone out.
AXES_CLIENT_IP_CALLABLE = "autocomplete.rate_limit.client_address"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# Uploads above this size are streamed to a temporary file rather than held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
# In a folder of the app's own, so that the jobs' stale-file cleanup removes what a killed request left.
FILE_UPLOAD_TEMP_DIR = str(VAR_DIR / "upload-tmp")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(mode=0o700, exist_ok=True)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024


def redis_caches(url: str) -> dict[str, dict[str, Any]]:
    """The two caches on the Redis server at `url`, each under its own key prefix."""
    # Short timeouts: a dead or unreachable Redis must cost a request little (it then acts as an
    # empty cache, autocomplete/resilient_cache.py); a healthy one nearby answers far within them.
    options = {"socket_connect_timeout": 0.1, "socket_timeout": 0.25}
    backend = "autocomplete.resilient_cache.ResilientRedisCache"
    return {
        "default": {"BACKEND": backend, "LOCATION": url, "KEY_PREFIX": "autocomplete", "OPTIONS": options},
        # Bounded by Redis's own `maxmemory` and eviction policy (allkeys-lru), not by an entry count.
        "query-embeddings": {
            "BACKEND": backend,
            "LOCATION": url,
            "KEY_PREFIX": "autocomplete-query-vectors",
            "TIMEOUT": 24 * 3600,
            "OPTIONS": options,
        },
    }


# `default` holds the rate-limit counters and the catalog's change token, `query-embeddings` the
# query vectors: in-process unless REDIS_URL is set, and then shared by every worker and host.
_REDIS_URL = env_str("REDIS_URL")
CACHES = (
    redis_caches(_REDIS_URL)
    if _REDIS_URL
    else {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        # Query vectors by encoder + text: 50,000 vectors of 1.5 KB bound it to about 75 MB per process.
        "query-embeddings": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "query-embeddings",
            "TIMEOUT": 24 * 3600,
            "OPTIONS": {"MAX_ENTRIES": 50_000, "CULL_FREQUENCY": 10},
        },
    }
)


def _not_a_deliberate_503(record: logging.LogRecord) -> bool:
    # A 503 is an answer the app chose (a corpus or the database unavailable); its cause is logged
    # once where it is found, not again for every keystroke that meets it.
    return getattr(record, "status_code", None) != 503


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "filters": {"no_deliberate_503": {"()": "django.utils.log.CallbackFilter", "callback": _not_a_deliberate_503}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "autocomplete": {"handlers": ["stderr"], "level": "INFO"},
        "embeddings": {"handlers": ["stderr"], "level": "INFO"},
        # Every 500, with its traceback, whatever DEBUG says (Django's default prints it only in
        # debug mode and otherwise mails ADMINS, which is empty here).
        "django.request": {
            "handlers": ["stderr"],
            "level": "ERROR",
            "filters": ["no_deliberate_503"],
            "propagate": False,
        },
    },
}

# Background jobs run through Django's tasks API (the django-tasks backport) on its database
# backend: no extra service, and `manage.py db_worker` on any machine sharing the database runs them.
TASKS = {
    "default": {
        "BACKEND": env_str("AUTOCOMPLETE_TASKS_BACKEND") or "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default"],
    }
}

# Index files in a storage of Django's STORAGES rather than the local index directory: a JSON object
# {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {...}} (docs/deploy.md).
_INDEX_STORAGE = env_json("AUTOCOMPLETE_INDEX_STORAGE")
INDEX_STORAGE_ALIAS = "autocomplete_indexes"
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
if _INDEX_STORAGE:
    STORAGES[INDEX_STORAGE_ALIAS] = _INDEX_STORAGE

# The app's settings (defaults and meanings: autocomplete/conf.py). Keys left out, here because
# their variable is unset, take the default.
_AUTOCOMPLETE_FROM_ENVIRONMENT: dict[str, Any] = {
    # With a shared cache, a new live build reaches every server at once (autocomplete/catalog.py).
    "CATALOG_CHANGE_CACHE": "default" if _REDIS_URL else None,
    "VAR_DIR": VAR_DIR,
    "ENCODERS": {
        "ivysaur": {"PATH": env_str("AUTOCOMPLETE_IVYSAUR_PATH") or None},
        "gist-small": {"PATH": env_str("AUTOCOMPLETE_GIST_SMALL_PATH") or None},
        "minilm": {},
    },
    "ALLOW_DOWNLOAD": env_bool("AUTOCOMPLETE_ALLOW_DOWNLOAD"),
    "ENCODER_BACKEND": env_str("AUTOCOMPLETE_ENCODER_BACKEND"),
    "ONNX_DIR": env_path("AUTOCOMPLETE_ONNX_DIR"),
    "ENCODER_THREADS": env_int("AUTOCOMPLETE_ENCODER_THREADS"),
    "DEFAULT_ENCODER": env_str("AUTOCOMPLETE_DEFAULT_ENCODER"),
    "FALLBACK_ENCODER": env_str("AUTOCOMPLETE_FALLBACK_ENCODER"),
    "DEFAULT_CORPUS": env_str("AUTOCOMPLETE_DEFAULT_CORPUS"),
    "INDEX_DIR": env_path("AUTOCOMPLETE_INDEX_DIR"),
    "INDEX_STORAGE": INDEX_STORAGE_ALIAS if _INDEX_STORAGE else None,
    "ANN_THRESHOLD": env_int("AUTOCOMPLETE_ANN_THRESHOLD"),
    "CATALOG_TTL_SECONDS": env_float("AUTOCOMPLETE_CATALOG_TTL_SECONDS"),
    "EMBED_BATCH_SIZE": env_int("AUTOCOMPLETE_EMBED_BATCH_SIZE"),
    "QUERY_CACHE": env_str("AUTOCOMPLETE_QUERY_CACHE"),
    "MAX_QUESTION_LENGTH": env_int("AUTOCOMPLETE_MAX_QUESTION_LENGTH"),
    "MAX_ANSWER_LENGTH": env_int("AUTOCOMPLETE_MAX_ANSWER_LENGTH"),
    "MAX_UPLOAD_BYTES": env_int("AUTOCOMPLETE_MAX_UPLOAD_BYTES"),
    "MAX_ANONYMOUS_BODY_BYTES": env_int("AUTOCOMPLETE_MAX_ANONYMOUS_BODY_BYTES"),
    "MAX_ROWS": env_int("AUTOCOMPLETE_MAX_ROWS"),
    "SERVE_STATIC": env_bool("AUTOCOMPLETE_SERVE_STATIC"),
    "UPLOAD_DIR": env_path("AUTOCOMPLETE_UPLOAD_DIR"),
    "JOB_STALE_SECONDS": env_float("AUTOCOMPLETE_JOB_STALE_SECONDS"),
    "JOB_BATCH_PAUSE_SECONDS": env_float("AUTOCOMPLETE_JOB_BATCH_PAUSE_SECONDS"),
    "JOB_AUTO_RETRIES": env_int("AUTOCOMPLETE_JOB_AUTO_RETRIES"),
    "JOB_BUSY_RETRY_SECONDS": env_float("AUTOCOMPLETE_JOB_BUSY_RETRY_SECONDS"),
    "PREVIEW_TTL_SECONDS": env_float("AUTOCOMPLETE_PREVIEW_TTL_SECONDS"),
    "QUERY_ENCODER_RETRAIN_SHARE": env_float("AUTOCOMPLETE_QUERY_ENCODER_RETRAIN_SHARE"),
    "RATE_LIMIT": env_bool("AUTOCOMPLETE_RATE_LIMIT"),
    "RATE_LIMIT_PER_SECOND": env_float("AUTOCOMPLETE_RATE_LIMIT_PER_SECOND"),
    "RATE_LIMIT_BURST": env_int("AUTOCOMPLETE_RATE_LIMIT_BURST"),
    # Comma-separated lists, parsed by autocomplete/conf.py.
    "TRUSTED_PROXIES": env_str("AUTOCOMPLETE_TRUSTED_PROXIES"),
    "API_KEY_CACHE_SECONDS": env_float("AUTOCOMPLETE_API_KEY_CACHE_SECONDS"),
    "CORS_ALLOWED_ORIGINS": env_str("AUTOCOMPLETE_CORS_ALLOWED_ORIGINS"),
    "EVENTS": env_bool("AUTOCOMPLETE_EVENTS"),
    "EVENT_RETENTION_DAYS": env_int("AUTOCOMPLETE_EVENT_RETENTION_DAYS"),
}
AUTOCOMPLETE: Mapping[str, Any] = {
    key: value for key, value in _AUTOCOMPLETE_FROM_ENVIRONMENT.items() if value is not None
}
