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

# Container image built by `make image` (kind/demo.sh passes its own IMAGE).
IMAGE ?= dcu-dra:dev
# The project version, for the wheel's file name and the image's version label.
PROJECT_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEEL := build/dist/dcu_dra-$(PROJECT_VERSION)-py3-none-any.whl

.PHONY: golden help venv fmt lint type unit test proto check-generated controlplane demo clean
.PHONY: wheel image pyz
.PHONY: helm bench cdiruntime

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV_STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing dcu-dra with its dev extra"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	@# The build backend warns about editable installs on every run; the log keeps it, and
	@# the terminal gets it only when the install fails.
	@$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' >$(VENV)/install.log 2>&1 \
		|| { cat $(VENV)/install.log >&2; echo "pip install failed (log: $(VENV)/install.log)" >&2; exit 1; }
	@touch $@

venv: $(VENV_STAMP) ## Create .venv with the project and its dev tools

fmt: $(VENV_STAMP) ## ruff format + autofix
	$(BIN)/ruff format dra_driver tests bench proto
	$(BIN)/ruff check --fix dra_driver tests bench proto

lint: $(VENV_STAMP) ## ruff check, format --diff and the import-layer contracts
	$(BIN)/ruff check dra_driver tests bench proto
	$(BIN)/ruff format --diff dra_driver tests bench proto
	$(BIN)/lint-imports

type: $(VENV_STAMP) ## mypy (strict on dra_driver)
	$(BIN)/mypy

unit: $(VENV_STAMP) ## pytest only
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint type controlplane helm cdiruntime unit ## Everything CI runs: lint, types, control plane, all tests

proto: $(VENV_STAMP) ## Regenerate dra_driver/kubeletplugin/_pb from proto/
	$(PY) proto/generate.py

check-generated: $(VENV_STAMP) ## Fail if the committed stubs differ from what proto/ generates
	$(PY) proto/generate.py --check

CONTROLPLANE := build/bin/controlplane
controlplane: ## Build the local control plane (etcd, kube-apiserver, scheduler, controller-manager)
	@# Go rebuilds only what changed (about a second when nothing did), so this runs every time;
	@# only the first build, which downloads and compiles k8s.io/kubernetes, is worth a line.
	@[ -x $(CONTROLPLANE) ] || echo "==> building $(CONTROLPLANE) (the first build downloads k8s.io/kubernetes and takes minutes)"
	@mkdir -p build/bin
	@# A cold build prints a line per module it fetches: hundreds; keep only what else Go says.
	@cd tests/controlplane && $(GO) build -o ../../$(CONTROLPLANE) . 2>&1 | { grep -v '^go: downloading ' || true; }

# cdi-inject: the CDI Go library (tags.cncf.io/container-device-interface v1.1.2) applying CDI
# specs as containerd does; the tests and make demo lay out containers from what it reports.
CDI_INJECT := build/bin/cdi-inject
cdiruntime: ## Build build/bin/cdi-inject (the container runtime's CDI code, for tests and the demo)
	@# Go rebuilds only what changed, so this runs every time (well under a second when nothing did).
	@mkdir -p build/bin
	@cd tests/cdiruntime && $(GO) build -o ../../$(CDI_INJECT) . 2>&1 | { grep -v '^go: downloading ' || true; }

# Helm, for the chart's lint and template tests (tests/deploy/) and kind/demo.sh. Pinned: the
# newest stable release when the chart was written (v4.3.1 needs Go >= 1.26). The ldflags set
# what `helm version` reports, as helm's own Makefile does; rebuilt only when that differs.
HELM_VERSION := v4.3.1
HELM := build/bin/helm
helm: ## Build the pinned helm into build/bin/helm from the Go module proxy
	@if [ "$$($(HELM) version --template '{{.Version}}' 2>/dev/null)" != "$(HELM_VERSION)" ]; then \
		echo "==> building $(HELM) $(HELM_VERSION) (a cold build downloads its modules and takes minutes)"; \
		mkdir -p build/bin; \
		GOBIN=$(CURDIR)/build/bin $(GO) install -trimpath \
			-ldflags '-s -w -X helm.sh/helm/v4/internal/version.version=$(HELM_VERSION)' \
			helm.sh/helm/v4/cmd/helm@$(HELM_VERSION) 2>&1 | { grep -v '^go: downloading ' || true; }; \
	fi

demo: $(VENV_STAMP) controlplane cdiruntime ## Two mock DCU nodes, the real plugin, every example pod (KEEP=1: stay up)
	@$(PY) -m dra_driver.tools.demo $(if $(KEEP),--keep)

bench: $(VENV_STAMP) controlplane ## Benchmark the plugin against floors measured in the same run (QUICK=1: a few cycles)
	@$(PY) -m bench.run $(if $(QUICK),--quick) --json build/bench.json

golden: $(VENV_STAMP) ## Regenerate the reference CDI specs in cdi/ (review the diff)
	DCU_DRA_UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/cdi/test_cdi_golden.py

wheel: $(VENV_STAMP) ## Build build/dist/dcu_dra-<version>-py3-none-any.whl (the image's recipe)
	@# A stale build/lib would leak deleted modules into the wheel; the image builds from scratch.
	@rm -rf build/lib build/dist/dcu_dra-*.whl
	@$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation -w build/dist .
	@echo "==> $(WHEEL)"

# The one-file dcu-dra that make demo and kind/demo.sh run inside the example pods. Its builder
# needs only the standard library, so the host's python3 runs it and no venv is created.
PYZ := build/dist/dcu-dra.pyz
pyz: ## Build build/dist/dcu-dra.pyz, the one-file dcu-dra that runs `verify` in a container
	@$(PYTHON) -m dra_driver.tools.pyz $(PYZ)

image: ## Build the container image $(IMAGE) from deploy/container/Dockerfile (needs Docker)
	@docker info >/dev/null 2>&1 || { echo "make image needs a running Docker engine (none found): 'docker info' failed; install Docker (https://docs.docker.com/engine/install/) and start it" >&2; exit 1; }
	docker build -f deploy/container/Dockerfile --build-arg VERSION=$(PROJECT_VERSION) -t $(IMAGE) .

clean: ## Remove build outputs and the venv
	rm -rf build $(VENV) .mypy_cache .ruff_cache .pytest_cache
