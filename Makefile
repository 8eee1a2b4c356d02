# Targets match what README tells a new user: `make demo`, `make test`.
# Everything runs from the project's own .venv, which `make setup` creates.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

VENV := .venv
BIN := $(VENV)/bin
# mypy cannot follow setuptools' editable finder (package-dir maps agent/ to
# gitdock.agent, ...), so it reads the packages through a symlinked gitdock/ tree.
# tests/ is a base too, so test modules get the names pytest gives them (support.docker).
TYPECHECK := build/typecheck
PACKAGES := agent specs runtime
PYTEST_ARGS ?=

.PHONY: setup test lint typecheck-tree bench demo clean wheel image

setup:
	bash tests/env/setup.sh

# Exit 5 is pytest's "no tests collected": a non-zero status that is spelt out,
# so a run that tested nothing can never pass for a green one.
test: setup
	@rc=0; GITDOCK_REQUIRE_DOCKER=$${GITDOCK_REQUIRE_DOCKER:-1} $(BIN)/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; fi; \
	exit $$rc

typecheck-tree:
	@mkdir -p $(TYPECHECK)/gitdock
	@for p in $(PACKAGES); do ln -sfn ../../../$$p $(TYPECHECK)/gitdock/$$p; done

# Each tool runs even when an earlier one fails, and any failure fails the target.
# mypy's paths are rewritten back to the real files (specs/x.py, not build/...).
lint: typecheck-tree
	@rc=0; \
	echo "+ ruff check ."; $(BIN)/ruff check . || rc=1; \
	echo "+ ruff format --check ."; $(BIN)/ruff format --check . || rc=1; \
	echo "+ mypy $(TYPECHECK)/gitdock tests"; MYPYPATH=$(TYPECHECK):tests $(BIN)/mypy $(TYPECHECK)/gitdock tests 2>&1 \
	  | sed -E 's#^$(TYPECHECK)/gitdock/##' || rc=1; \
	if [ -f .importlinter ]; then echo "+ lint-imports"; $(BIN)/lint-imports || rc=1; fi; \
	exit $$rc

bench: setup
	@for f in tests/bench/bench_*.py; do echo "+ $$f"; $(BIN)/python $$f; done

demo: setup
	$(BIN)/gitdock apply -f examples/webapp/compose.yaml
	$(BIN)/gitdock ps -p webapp

# The wheel and the sdist, in dist/ (the version is pyproject.toml's).
wheel: setup
	$(BIN)/python -m build --outdir dist .

# The agent's container image, built here without pulling anything; prints its tag.
# Cached: the debootstrap base is kept, and an image built from the same files is kept.
image: setup
	PYTHON=$(BIN)/python bash examples/image/build.sh

# Leaves .venv alone: others may be using it; `rm -rf .venv` to start over.
clean:
	rm -rf build dist .bench .pytest_cache .mypy_cache .ruff_cache *.egg-info
	find . -path ./.venv -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
