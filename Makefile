# Two commands a newcomer needs: `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt constraints.txt | md5sum | cut -c1-8)
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_CORPUS ?= help

.PHONY: setup demo test chromium migrate demo-data serve worker bench lint check clean

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
	@echo "Serving http://$(HOST):$(PORT)/  (admin: $(BIN)/python manage.py createsuperuser)"
	$(BIN)/python manage.py db_worker --no-reload & worker=$$!; \
	trap 'kill $$worker 2>/dev/null' EXIT INT TERM; \
	HOST=$(HOST) PORT=$(PORT) $(BIN)/gunicorn -c config/gunicorn.py config.wsgi

# A background worker alone: runs queued ingest jobs (several may run, here or on other machines).
worker: migrate
	$(BIN)/python manage.py db_worker --no-reload

# Production serving: gunicorn with measured settings (config/gunicorn.py), models warmed per worker.
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

test: setup chromium
	$(BIN)/python -m pytest --cov --cov-report=term -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# What CI runs: the linters and type checker, then every test.
check: lint test

clean:
	rm -rf var staticfiles .coverage htmlcov
