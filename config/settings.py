"""Settings for the embedded default: SQLite, local index files, no extra services.

Everything a deployment changes is read from the environment, so the same code serves the demo,
the test suite and (later) PostgreSQL + Redis + shared storage behind several replicas.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("AUTOCOMPLETE_VAR_DIR", BASE_DIR / "var"))
# Database and index files live here unless their own settings say otherwise.
VAR_DIR.mkdir(parents=True, exist_ok=True)


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-demo-key-set-DJANGO_SECRET_KEY-in-production")
DEBUG = _env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",")

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
    "autocomplete",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Answers /api/suggest before the session, CSRF, auth and messages middleware below (see module).
    "autocomplete.middleware.SuggestFastPathMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("AUTOCOMPLETE_DATABASE_PATH", str(VAR_DIR / "db.sqlite3")),
        # WAL lets readers keep answering while an ingest holds the write lock.
        # IMMEDIATE takes the write lock when a transaction begins, so concurrent ingest jobs
        # queue up instead of failing on a stale snapshot.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL;", "timeout": 30, "transaction_mode": "IMMEDIATE"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    # Query vectors by encoder + text; 50,000 entries of 1.5 KB is about 75 MB per process.
    "query-embeddings": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": "query-embeddings",
        "TIMEOUT": 24 * 3600,
        "OPTIONS": {"MAX_ENTRIES": 50_000, "CULL_FREQUENCY": 10},
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "autocomplete": {"handlers": ["stderr"], "level": "INFO"},
        "embeddings": {"handlers": ["stderr"], "level": "INFO"},
    },
}

# --- Semantic autocomplete -------------------------------------------------------------------
# Encoders by key. PATH points a key at a local model directory (the only way to load Ivysaur or
# GIST-small without a model hub); ALLOW_DOWNLOAD lets sentence-transformers fetch from the hub.
AUTOCOMPLETE_ENCODERS: dict[str, dict[str, object]] = {
    "ivysaur": {"PATH": os.environ.get("AUTOCOMPLETE_IVYSAUR_PATH") or None},
    "gist-small": {"PATH": os.environ.get("AUTOCOMPLETE_GIST_SMALL_PATH") or None},
    "minilm": {},
}
AUTOCOMPLETE_ALLOW_DOWNLOAD = _env_bool("AUTOCOMPLETE_ALLOW_DOWNLOAD", False)
# How encoders run: "onnx-int8" (ONNX Runtime, int8 weights: the fast serving path), "onnx" (fp32)
# or "torch" (sentence-transformers). ONNX files are exported offline from the same weights, once,
# into AUTOCOMPLETE_ONNX_DIR. A per-encoder "BACKEND" in AUTOCOMPLETE_ENCODERS overrides this.
AUTOCOMPLETE_ENCODER_BACKEND = os.environ.get("AUTOCOMPLETE_ENCODER_BACKEND", "onnx-int8")
AUTOCOMPLETE_ONNX_DIR = Path(os.environ.get("AUTOCOMPLETE_ONNX_DIR", VAR_DIR / "onnx"))
# Threads per encoder call: 0 = all cores (ingest); serving workers set 1 (workers x threads <= cores).
AUTOCOMPLETE_ENCODER_THREADS = int(os.environ.get("AUTOCOMPLETE_ENCODER_THREADS", "0"))
AUTOCOMPLETE_DEFAULT_ENCODER = os.environ.get("AUTOCOMPLETE_DEFAULT_ENCODER", "ivysaur")
# Used openly (warning logged, encoder named in the page and JSON) when the default cannot load.
AUTOCOMPLETE_FALLBACK_ENCODER: str | None = os.environ.get("AUTOCOMPLETE_FALLBACK_ENCODER", "minilm") or None
# Corpus served when a request names none and several corpora exist.
AUTOCOMPLETE_DEFAULT_CORPUS: str | None = os.environ.get("AUTOCOMPLETE_DEFAULT_CORPUS") or None

AUTOCOMPLETE_INDEX_DIR = Path(os.environ.get("AUTOCOMPLETE_INDEX_DIR", VAR_DIR / "indexes"))
# Corpora with more questions than this get an HNSW index instead of exact search.
AUTOCOMPLETE_ANN_THRESHOLD = int(os.environ.get("AUTOCOMPLETE_ANN_THRESHOLD", "20000"))
AUTOCOMPLETE_HNSW = {"M": 32, "EF_CONSTRUCTION": 200, "EF_SEARCH": 128}
# How often a serving process re-reads which index build is live (hot swap across replicas).
AUTOCOMPLETE_CATALOG_TTL_SECONDS = float(os.environ.get("AUTOCOMPLETE_CATALOG_TTL_SECONDS", "2"))
AUTOCOMPLETE_EMBED_BATCH_SIZE = int(os.environ.get("AUTOCOMPLETE_EMBED_BATCH_SIZE", "64"))
# Cache alias for query vectors ("" turns the cache off).
AUTOCOMPLETE_QUERY_CACHE = os.environ.get("AUTOCOMPLETE_QUERY_CACHE", "query-embeddings")
AUTOCOMPLETE_MAX_QUERY_LENGTH = 200
AUTOCOMPLETE_MAX_K = 20
AUTOCOMPLETE_DEFAULT_K = 5
AUTOCOMPLETE_MAX_QUESTION_LENGTH = int(os.environ.get("AUTOCOMPLETE_MAX_QUESTION_LENGTH", "1000"))
AUTOCOMPLETE_MAX_ANSWER_LENGTH = int(os.environ.get("AUTOCOMPLETE_MAX_ANSWER_LENGTH", "20000"))
AUTOCOMPLETE_SERVE_STATIC = _env_bool("AUTOCOMPLETE_SERVE_STATIC", True)
AUTOCOMPLETE_MAX_UPLOAD_BYTES = int(os.environ.get("AUTOCOMPLETE_MAX_UPLOAD_BYTES", str(50 * 1000 * 1000)))
AUTOCOMPLETE_MAX_ROWS = int(os.environ.get("AUTOCOMPLETE_MAX_ROWS", "200000"))

# --- Uploads and background jobs -------------------------------------------------------------
# Ingestion jobs run through Django's tasks API (the django-tasks backport) on its database
# backend: no extra service; `manage.py db_worker` runs them, on this machine or any other that
# shares the database (PostgreSQL at scale) and the index directory.
TASKS = {
    "default": {
        "BACKEND": os.environ.get("AUTOCOMPLETE_TASKS_BACKEND", "django_tasks_db.DatabaseBackend"),
        "QUEUES": ["default"],
    }
}
# Uploaded files wait here, under random names, until their job has run; never served.
AUTOCOMPLETE_UPLOAD_DIR = Path(os.environ.get("AUTOCOMPLETE_UPLOAD_DIR", VAR_DIR / "uploads"))
# A running job whose worker has not reported for this long is shown as interrupted.
AUTOCOMPLETE_JOB_STALE_SECONDS = float(os.environ.get("AUTOCOMPLETE_JOB_STALE_SECONDS", "120"))
# Seconds a job sleeps after each batch: leaves CPU to serving on a shared machine (0 = none).
AUTOCOMPLETE_JOB_BATCH_PAUSE_SECONDS = float(os.environ.get("AUTOCOMPLETE_JOB_BATCH_PAUSE_SECONDS", "0"))
# Unconfirmed previews and their files are dropped after this long.
AUTOCOMPLETE_PREVIEW_TTL_SECONDS = float(os.environ.get("AUTOCOMPLETE_PREVIEW_TTL_SECONDS", str(24 * 3600)))
