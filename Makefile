# Each target does its own set-up on a fresh machine: a virtualenv in .venv with the project installed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run demo test test-deps lint bench clean

$(STAMP): pyproject.toml setup.py $(wildcard moonstream/native_src/*.c moonstream/native_src/*.h)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/moonstream run

demo: $(STAMP)
	$(BIN)/moonstream demo

lint: $(STAMP)
	$(BIN)/ruff check moonstream tests bench setup.py
	$(BIN)/ruff format --check moonstream tests bench setup.py
	$(BIN)/mypy

# Headless Chromium for the viewer tests (tests/integration/test_viewer.py), from Debian. Without root
# or apt-get it only says so: those tests then skip and the rest still run.
test-deps:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
	      || echo "test-deps: installing chromium failed; the viewer tests will skip"; \
	  else \
	    echo "test-deps: chromium not installed (needs root and apt-get); the viewer tests will skip"; \
	  fi; }

test: $(STAMP) lint test-deps
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache build moonstream/*.so
