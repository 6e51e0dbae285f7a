# The two commands (CONTRACT section 1): `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test test-fast bench bench-quick bench-support lint services error-codes

$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $(STAMP)

# Web + relay + worker in the foreground until Ctrl-C. Embedded (SQLite + in-process broker +
# console e-mail) unless DATABASE_URL and BROKER_URL are set.
run: $(STAMP)
	$(PY) manage.py migrate --no-input
	@$(PY) manage.py create_portal demo --name "Demo portal"
	@echo "Send a signed sample webhook from another terminal with:"
	@echo "    $(PY) manage.py send_test_webhook demo --url http://127.0.0.1:8000"
	$(PY) manage.py run_pipeline --bind 127.0.0.1:8000

# The whole suite against the real PostgreSQL and RabbitMQ on loopback (started if down).
test: $(STAMP)
	bash deploy/install-tools.sh
	bash deploy/ensure-services.sh
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	bash deploy/ensure-services.sh
	$(PY) bench/run.py

bench-quick: $(STAMP)
	bash deploy/ensure-services.sh
	$(PY) bench/run.py --quick

# The support pages (admin lists, change pages, /admin/status/) timed at a million notifications.
bench-support: $(STAMP)
	bash deploy/ensure-services.sh
	$(PY) -m bench.support_pages
