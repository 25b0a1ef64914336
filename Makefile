# mailwarden: `make run` starts it on loopback with var/mailwarden.toml, `make test` sets up and runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test venv system-packages lint typecheck unit integration lock docs clean

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev,uvloop]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

# Debian packages of the real servers the integration tests start (Postfix, Dovecot, ClamAV, ...).
system-packages:
	sh scripts/install-system-packages.sh

# The first start writes var/mailwarden.toml (loopback, offline, commented); it is used from then on.
run: venv
	test -f var/mailwarden.toml || $(BIN)/mailwarden -c var/mailwarden.toml config init
	$(BIN)/mailwarden -c var/mailwarden.toml serve

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: venv
	$(BIN)/mypy

test: system-packages venv lint typecheck
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest tests/unit

integration: system-packages venv
	$(BIN)/pytest tests/integration

# Regenerate the pinned versions after changing dependencies in pyproject.toml.
lock:
	rm -rf /tmp/mailwarden-lock && $(PY) -m venv /tmp/mailwarden-lock
	/tmp/mailwarden-lock/bin/pip install -q -e '.[dev,uvloop]'
	/tmp/mailwarden-lock/bin/pip freeze --exclude-editable | grep -v '^mailwarden' > requirements.lock

docs: venv
	$(BIN)/mailwarden config docs > docs/configuration.md

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
