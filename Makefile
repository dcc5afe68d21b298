# The two commands of the README: `make demo` starts the dashboard, `make test` runs the tests.
# `make lint` is the tooling gate CI runs first: ruff, ruff format, mypy (app/), import contracts.
VENV := .venv
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: demo test install bench lint

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/termpulse demo

# Every tool runs even when an earlier one finds something; the target fails if any did.
lint: $(STAMP)
	@status=0; \
	echo "== ruff check"; $(VENV)/bin/ruff check . || status=1; \
	echo "== ruff format --check"; $(VENV)/bin/ruff format --check . || status=1; \
	echo "== mypy"; $(VENV)/bin/mypy || status=1; \
	echo "== lint-imports"; $(VENV)/bin/lint-imports --no-logo || status=1; \
	exit $$status

# Two pytest-xdist workers (on a loaded 2-core machine about 150 s against 250 s serially); each
# has its own PostgreSQL database and loopback addresses, and --dist loadgroup keeps the browser
# tests (one Chromium) and the multi-worker tests together. PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

bench: $(STAMP)
	for b in bench/*.py; do $(VENV)/bin/python $$b || exit 1; done
