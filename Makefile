# The two commands of the README: `make run` serves the demo, `make test` runs the suite.
# Both create .venv and install what they need first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install install-dev lint format bench clean

# Installs print pip's progress (a minute or two on a fresh machine), each slow step
# announced by a "==>" line.
$(BIN)/python:
	@echo "==> creating $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> installing the service's dependencies into $(VENV) (about a minute the first time)"
	$(BIN)/pip install --progress-bar on -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	@echo "==> installing the service's and the tests' dependencies into $(VENV) (a minute or two the first time)"
	$(BIN)/pip install --progress-bar on -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

# Local development server: DEBUG on (so no SECRET_KEY is needed), SQLite and the
# in-memory channel layer unless DATABASE_URL / REDIS_URL are set. It also writes .env
# (DEBUG=1, once; config/local_env.py), which manage.py and config.serve read, so the
# README's commands work in a new shell afterwards.
run: export DEBUG ?= 1
# Notification emails are printed to the terminal unless EMAIL_BACKEND says otherwise.
run: export EMAIL_BACKEND ?= django.core.mail.backends.console.EmailBackend
run: install
	@$(BIN)/python -m config.local_env
	@echo "==> migrating the database"
	$(BIN)/python manage.py migrate --no-input
	@echo "==> loading the demo tenant"
	$(BIN)/python manage.py load_demo --base-url http://$(HOST):$(PORT)
	$(BIN)/python manage.py quickstart --base-url http://$(HOST):$(PORT)
	@# The SLA monitor, the notification email worker and the webhook deliverer run beside
	@# the server and stop when it exits. Links in the emails point at this server unless
	@# NOTIFICATION_EMAIL_BASE_URL says otherwise.
	$(BIN)/python manage.py sla_monitor & monitor=$$!; \
	NOTIFICATION_EMAIL_BASE_URL=$${NOTIFICATION_EMAIL_BASE_URL:-http://$(HOST):$(PORT)} \
		$(BIN)/python manage.py send_notification_emails & mailer=$$!; \
	$(BIN)/python manage.py deliver_webhooks & deliverer=$$!; \
	trap 'kill $$monitor $$mailer $$deliverer 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python -m config.serve --host $(HOST) --port $(PORT); status=$$?; \
	kill $$monitor $$mailer $$deliverer 2>/dev/null; wait $$monitor $$mailer $$deliverer 2>/dev/null; exit $$status

# The whole suite: on PostgreSQL + Redis when DATABASE_URL / REDIS_URL are set,
# else on the embedded default (SQLite file + in-memory channel layer).
# The browser tests (marker `browser`) drive Debian's chromium (CHROMIUM_PATH, default
# /usr/bin/chromium) and the stream-edge tests (marker `edge`) run Debian's pushpin. What
# is missing is installed from Debian's packages if this user can (root and apt-get);
# otherwise the rest of the suite runs and the command that installs it is printed.
# PYTEST_ARGS is passed on to pytest.
CHROMIUM_PATH ?= /usr/bin/chromium
test: export SECRET_KEY ?= test-only-secret-key
test: export CHROMIUM_PATH := $(CHROMIUM_PATH)
test: install-dev
	@can_install=; if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then can_install=1; fi; \
	wanted=; \
	if [ ! -x "$(CHROMIUM_PATH)" ] && [ "$(CHROMIUM_PATH)" = /usr/bin/chromium ]; then wanted="chromium"; fi; \
	if ! command -v pushpin >/dev/null; then wanted="$$wanted pushpin"; fi; \
	if [ -n "$$wanted" ] && [ -n "$$can_install" ]; then \
	  echo "==> installing$$wanted from Debian's packages (the browser and stream-edge tests use them)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update && apt-get install -y $$wanted || exit 1; \
	fi; \
	skip=; \
	if [ ! -x "$(CHROMIUM_PATH)" ]; then skip="browser"; fi; \
	if ! command -v pushpin >/dev/null; then skip="$${skip:+$$skip or }edge"; fi; \
	if [ -z "$$skip" ]; then \
	  $(BIN)/pytest $(PYTEST_ARGS); \
	else \
	  echo "==> running every test but the $$skip tests (missing: Chromium at $(CHROMIUM_PATH) / pushpin)."; \
	  $(BIN)/pytest -m "not ($$skip)" $(PYTEST_ARGS); status=$$?; \
	  echo "==> The $$skip tests did NOT run. Install what they need, then run make test again:"; \
	  echo "      sudo apt-get install chromium pushpin    (Debian/Ubuntu; or set CHROMIUM_PATH=/path/to/chromium)"; \
	  exit $$status; \
	fi

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
