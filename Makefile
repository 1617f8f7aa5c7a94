# dcu-dra: every set-up step lives here, so a fresh clone needs only Python 3.11+ and Go.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# The venv is rebuilt whenever the project's dependencies change.
VENV_STAMP := $(VENV)/.installed
# Go may not be on PATH in a fresh shell: fall back to the standard install location.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

.PHONY: golden help venv fmt lint type unit test proto check-generated controlplane demo clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV_STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing dcu-dra with its dev extra"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

venv: $(VENV_STAMP) ## Create .venv with the project and its dev tools

fmt: $(VENV_STAMP) ## ruff format + autofix
	$(BIN)/ruff format dra_driver tests bench proto
	$(BIN)/ruff check --fix dra_driver tests bench proto

lint: $(VENV_STAMP) ## ruff check and format --diff
	$(BIN)/ruff check dra_driver tests bench proto
	$(BIN)/ruff format --diff dra_driver tests bench proto

type: $(VENV_STAMP) ## mypy (strict on dra_driver)
	$(BIN)/mypy

unit: $(VENV_STAMP) ## pytest only
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint type controlplane unit ## Everything CI runs: lint, types, control plane, all tests

proto: $(VENV_STAMP) ## Regenerate dra_driver/kubeletplugin/_pb from proto/
	$(PY) proto/generate.py

check-generated: $(VENV_STAMP) ## Fail if the committed stubs differ from what proto/ generates
	$(PY) proto/generate.py --check

CONTROLPLANE := build/bin/controlplane
controlplane: ## Build the local control plane (etcd, kube-apiserver, scheduler, controller-manager)
	@echo "==> building $(CONTROLPLANE) (first build downloads k8s.io/kubernetes and takes minutes)"
	@mkdir -p build/bin
	@cd tests/controlplane && $(GO) build -o ../../$(CONTROLPLANE) .

demo: $(VENV_STAMP) ## The demo on a mock DCU node (see README)
	@$(PY) -m dra_driver.demo

golden: $(VENV_STAMP) ## Regenerate the reference CDI specs in cdi/ (review the diff)
	DCU_DRA_UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/test_cdi_golden.py

clean: ## Remove build outputs and the venv
	rm -rf build $(VENV) .mypy_cache .ruff_cache .pytest_cache
