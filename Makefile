# The two commands (CONTRACT section 1): `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench bench-quick bench-scale-out bench-support bench-bounces lint services error-codes

# manage.py and eventplatform.wsgi default to production settings (they refuse the embedded
# defaults); every target here chooses its settings module explicitly.
DEV_SETTINGS := eventplatform.settings.development
TEST_SETTINGS := eventplatform.settings.test

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

# Web + relay + worker + scheduler in the foreground until Ctrl-C. Embedded (SQLite + in-process broker +
# console e-mail and SMS) unless DATABASE_URL and BROKER_URL are set. `make run PORT=8001 HOST=0.0.0.0`
# (or PORT/HOST in the environment) picks the bind; run_pipeline binds it before anything else starts
# and prints what to do next (URLs on that port) once the server answers.
PORT ?= 8000
HOST ?= 127.0.0.1
run: export DJANGO_SETTINGS_MODULE = $(DEV_SETTINGS)
run: $(STAMP)
	$(PY) manage.py migrate --no-input
	@$(PY) manage.py create_portal demo --name "Demo portal"
	$(PY) manage.py run_pipeline --bind $(HOST):$(PORT)

# Lint (ruff, stale noqa included), the layers (import-linter) and types (mypy), then the whole suite
# against the real PostgreSQL and RabbitMQ on loopback (started if down).
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
	bash deploy/install-tools.sh
	bash deploy/ensure-services.sh
	$(PY) -m pytest --ds=$(TEST_SETTINGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: export DJANGO_SETTINGS_MODULE = $(DEV_SETTINGS)
bench: $(STAMP)
	bash deploy/ensure-services.sh
	$(PY) bench/run.py --runs 3

bench-quick: export DJANGO_SETTINGS_MODULE = $(DEV_SETTINGS)
bench-quick: $(STAMP)
	bash deploy/ensure-services.sh
	$(PY) bench/run.py --quick

# docs/error-codes.md from the catalogue (eventplatform/errors.py)
error-codes: export DJANGO_SETTINGS_MODULE = $(DEV_SETTINGS)
error-codes: $(STAMP)
	$(PY) manage.py error_codes --write

# What a second relay, a second worker group and more web workers add (docs/performance.md).
bench-scale-out: export DJANGO_SETTINGS_MODULE = $(DEV_SETTINGS)
bench-scale-out: $(STAMP)
	bash deploy/ensure-services.sh
	$(PY) bench/run.py --scale-out

# The support pages (admin lists, change pages, /admin/status/) timed at a million notifications.
bench-support: export DJANGO_SETTINGS_MODULE = $(DEV_SETTINGS)
bench-support: $(STAMP)
	bash deploy/ensure-services.sh
	$(PY) -m bench.support_pages

# The bounce receiver: DSNs committed per second, arrival-to-status p99, CPU per report (docs/performance.md).
bench-bounces: export DJANGO_SETTINGS_MODULE = $(DEV_SETTINGS)
bench-bounces: $(STAMP)
	bash deploy/ensure-services.sh
	$(PY) -m bench.bounce_receiver
