# The two README commands:  `make run`  (set up + run the main job)  and  `make test`  (set up + run every test).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

.PHONY: setup run quick test lint test-deps images clean

setup: $(STAMP)

# One resolver pass with exact pins (constraints.txt): torch 2.13.0 comes from the local CPU wheel.
# The environment takes about 3 GB (torch alone 0.75 GB): a nearly full disk fails pip half-way ("No space left
# on device"), so say so first.
$(STAMP): pyproject.toml constraints.txt
	@free_kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); if [ -n "$$free_kb" ] && [ "$$free_kb" -lt 3500000 ]; then \
	  echo "warning: setup needs about 3.5 GB free here and $$((free_kb / 1024)) MB are; pip may stop with 'No space left on device'" >&2; fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip 'setuptools>=69' wheel
	$(BIN)/pip install -q -c constraints.txt -e '.[serve,dev]'
	@rm -f $(VENV)/.installed-* && touch $@

run: setup
	$(BIN)/lws pipeline run

# A ten-minute tour of the workflow (its model answers almost nothing): the same pipeline at about a tenth
# of the defaults' compute (profiles/quick.yaml; three seeds in benchmarks/results/pipeline.md), in its own
# workspace (.lws-quick), so its models are never gated against the defaults' champion.
quick: setup
	$(BIN)/lws pipeline run --config profiles/quick.yaml

# System packages the browser test needs (Debian's chromium); skipped when present.
# Under CI=true a failed install stops here (CI must never pass with the browser test skipped);
# elsewhere (a laptop without root) it warns and the browser test skips with the fix named.
test-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { if [ "$${CI:-}" = "true" ]; then echo "error: could not install Debian's chromium (tests/serve/test_browser.py needs it)" >&2; exit 1; \
	       else echo "warning: could not install Debian's chromium; the browser test will skip" >&2; fi; }

lint: setup
	$(BIN)/ruff check .

# Two xdist workers, whole files each (module fixtures built once), in conftest's order (slowest files
# first); `make test PYTEST_WORKERS=` runs serially.
PYTEST_WORKERS ?= -n 2 --dist loadfile --no-loadscope-reorder

test: setup test-deps
	$(BIN)/ruff check .
	DVC_NO_ANALYTICS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_WORKERS)

# Container images (needs a Docker engine; prints a clear message when there is none).
images:
	$(MAKE) -C infra images

clean:
	rm -rf $(VENV) .lws
