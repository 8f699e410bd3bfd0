# The two commands of the README: `make run` serves the demo, `make test` runs the suite.
# Both create .venv and install what they need first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev lint format bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Local development server: DEBUG on (so no SECRET_KEY is needed), SQLite and the
# in-memory channel layer unless DATABASE_URL / REDIS_URL are set.
run: export DEBUG ?= 1
run: install
	$(BIN)/python manage.py migrate --no-input
	$(BIN)/python manage.py load_demo
	$(BIN)/python manage.py quickstart --base-url http://$(HOST):$(PORT)
	@# The SLA monitor and the webhook deliverer run beside the server and stop when it exits.
	$(BIN)/python manage.py sla_monitor & monitor=$$!; \
	$(BIN)/python manage.py deliver_webhooks & deliverer=$$!; \
	trap 'kill $$monitor $$deliverer 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python -m config.serve --host $(HOST) --port $(PORT); status=$$?; \
	kill $$monitor $$deliverer 2>/dev/null; wait $$monitor $$deliverer 2>/dev/null; exit $$status

# The whole suite: on PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set,
# else on the embedded default (SQLite file + in-memory channel layer).
test: export SECRET_KEY ?= test-only-secret-key
test: install-dev
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install-dev
	$(BIN)/python bench/list_stream_fanout.py

clean:
	rm -rf $(VENV) db.sqlite3 test_db.sqlite3 .pytest_cache .ruff_cache
