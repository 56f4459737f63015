# Two commands a newcomer needs: `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt | md5sum | cut -c1-8)
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_CORPUS ?= help

.PHONY: setup demo test test-postgres chromium axe migrate demo-data superuser serve worker bench lint check clean

# The demo's secret key: random, made once on this machine in var/secret_key (mode 0600) and reused,
# so sessions survive a restart. A deployment sets DJANGO_SECRET_KEY itself (see README, "Production").
DEMO_SECRET_KEY_FILE := var/secret_key
demo_secret_key = $(shell test -s $(DEMO_SECRET_KEY_FILE) || (mkdir -p $(dir $(DEMO_SECRET_KEY_FILE)) && umask 077 && \
	$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $(DEMO_SECRET_KEY_FILE)); cat $(DEMO_SECRET_KEY_FILE))
demo demo-data superuser bench: export DJANGO_SECRET_KEY ?= $(demo_secret_key)

$(STAMP): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and alone, pinned: it takes the CPU wheel; unpinned it pulls a multi-GB CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -r requirements.txt
	$(BIN)/pip check
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

migrate: setup
	$(BIN)/python manage.py migrate --noinput

demo-data: migrate
	$(BIN)/python manage.py ingest fixtures/demo_faq.csv --corpus $(DEMO_CORPUS) --name "Help centre"
	$(BIN)/python manage.py export_onnx

# Sets everything up on a fresh machine and serves the demo corpus on http://$(HOST):$(PORT),
# with a background worker beside the web server for admin uploads (stopped with it).
demo: demo-data
	@echo "Serving http://$(HOST):$(PORT)/ with debug off, secret key in $(DEMO_SECRET_KEY_FILE) (admin account: make superuser)"
	$(BIN)/python manage.py db_worker --no-reload & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c config/gunicorn.py config.wsgi

# An admin account for the demo (with the demo's key; a deployment runs createsuperuser with its own).
superuser: migrate
	$(BIN)/python manage.py createsuperuser

# A background worker alone: runs queued ingest jobs (several may run, here or on other machines).
worker: migrate
	$(BIN)/python manage.py db_worker --no-reload

# Production serving: gunicorn with measured settings (config/gunicorn.py), models warmed per worker.
# Needs DJANGO_SECRET_KEY (and DJANGO_ALLOWED_HOSTS, DJANGO_HTTPS...: README, "Production"): without
# the key the settings refuse to load.
serve: migrate
	$(BIN)/python manage.py export_onnx
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c config/gunicorn.py config.wsgi

# Speed: ~70k questions in a temporary directory, our stack and the naive baseline served and typed
# into; prints the table of docs/performance.md and writes docs/latency.png. BENCH_ARGS adds options.
bench: setup
	$(BIN)/python manage.py bench $(BENCH_ARGS)

chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) >/dev/null; \
	  else echo "chromium is missing and cannot be installed here: browser tests will be skipped"; fi; \
	fi

# axe-core, the accessibility checker the browser tests inject into pages, pinned, from the npm
# registry into var/ (not committed); without npm those scans are skipped and say why.
AXE_CORE_VERSION := 4.14.1
axe:
	@if grep -qs '"version": "$(AXE_CORE_VERSION)"' var/node_modules/axe-core/package.json; then :; \
	elif command -v npm >/dev/null 2>&1; then \
	  npm install --silent --no-save --no-package-lock --no-audit --no-fund --prefix var axe-core@$(AXE_CORE_VERSION) \
	    || echo "axe-core could not be installed: the accessibility scans will be skipped"; \
	else echo "npm is missing: the accessibility scans will be skipped"; fi

test: setup chromium axe
	$(BIN)/python -m pytest --cov --cov-report=term -p no:cacheprovider

# Every test but the browser ones (their pages read the database as the other tests do) again, on
# PostgreSQL: pytest-django creates and drops test_<name> beside the database this URL names.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
test-postgres: setup
	AUTOCOMPLETE_TEST_DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest -p no:cacheprovider -m "not browser"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# What CI runs: the linters and type checker, then every test.
check: lint test

clean:
	rm -rf var staticfiles .coverage htmlcov
