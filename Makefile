# The two commands of the README: `make demo` runs the server, `make test` runs every test.
# Both set up what is missing first (scripts/setup.sh is idempotent).
PY := .venv/bin/python
TINY := .cache/tiny-checkpoint
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup demo test lint bench

setup:
	@bash scripts/setup.sh

$(TINY)/config.json: | setup
	$(PY) -m server.cli make-checkpoint --tiny $(TINY)

demo: setup $(TINY)/config.json
	$(PY) -m server.cli serve --model $(TINY) --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -ra

lint: setup
	$(PY) -m ruff check .
