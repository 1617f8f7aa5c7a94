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
.PHONY: helm bench bench-reference cdiruntime

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

test: lint type controlplane helm cdiruntime node-binaries images kubectl pyz unit ## Everything CI runs: lint, types, the builds, all tests (the real node as root)

proto: $(VENV_STAMP) ## Regenerate dra_driver/kubeletplugin/_pb from proto/
	$(PY) proto/generate.py

check-generated: $(VENV_STAMP) ## Fail if the committed stubs differ from what proto/ generates
	$(PY) proto/generate.py --check

# K8S=1.37 builds another Kubernetes version (the "Kubernetes versions" block at the end).
CONTROLPLANE = $(K8S_BIN)/controlplane
controlplane: ## Build the local control plane (etcd, kube-apiserver, scheduler, controller-manager; K8S=1.37: that version)
	@# Go rebuilds only what changed (about a second when nothing did), so this runs every time;
	@# only the first build, which downloads and compiles k8s.io/kubernetes, is worth a line.
	@[ -x $(CONTROLPLANE) ] || echo "==> building $(CONTROLPLANE) (the first build downloads k8s.io/kubernetes and takes minutes)"
	@mkdir -p build/bin
	@# A cold build prints a line per module it fetches: hundreds; keep only what else Go says.
	@mkdir -p $(K8S_BIN)
	@cd tests/controlplane && $(GO) build $(K8S_MODFILE) -o ../../$(CONTROLPLANE) . 2>&1 | { grep -v '^go: downloading ' || true; }

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

# Real nodes need root on Linux: only there does make demo build their binaries, images and kubectl.
REAL_NODE_DEPS := $(if $(and $(filter 0,$(shell id -u)),$(filter Linux,$(shell uname -s))),node-binaries images kubectl)
demo: $(VENV_STAMP) controlplane cdiruntime $(if $(FAKE),,$(REAL_NODE_DEPS)) ## Two mock DCU nodes (real ones as root), the real plugin, every example pod (KEEP=1: stay up; FAKE=1: fake kubelets)
	@$(PY) -m dra_driver.tools.demo $(if $(KEEP),--keep) $(if $(FAKE),--fake-nodes)

bench: $(VENV_STAMP) controlplane ## Benchmark the plugin against floors measured in the same run (QUICK=1: a few cycles)
	@$(PY) -m bench.run $(if $(QUICK),--quick) --json build/bench.json

bench-reference: $(VENV_STAMP) controlplane ## Our daemon beside the upstream reference driver's plugin, one run (REFERENCE_BIN=its binary, BEFORE=another tree of ours: see README)
	@$(PY) -m bench.reference $(REFERENCE_BIN) $(if $(BEFORE),--before $(BEFORE))

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

# Images for the real-node test bed, which runs containerd with no registry: OCI archives that
# `ctr -n k8s.io images import` reads, written by dra_driver/testing/oci_image.py (host python3,
# standard library only). Each step runs only when its inputs changed. Built by `make test`, and by `make demo` as root.
.PHONY: images
IMAGES_DIR := build/images
PAUSE_IMAGE_NAME := registry.local/dcu-dra/pause:3.10
TEST_IMAGE_NAME := registry.local/dcu-dra/dcu-test:py3.11
OCI_IMAGE_WRITER := dra_driver/testing/oci_image.py
TEST_IMAGE_SCRIPT := tests/node/testimage/build-rootfs.sh
# The downloaded .debs are a cache: only a change to the package list downloads them again.
TEST_IMAGE_DEBS := $(IMAGES_DIR)/debs/versions.txt
TEST_IMAGE_ROOTFS := $(IMAGES_DIR)/dcu-test-rootfs/etc/dcu-test-packages.txt

images: $(IMAGES_DIR)/pause.tar $(IMAGES_DIR)/dcu-test.tar ## OCI archives of the pause and test images for ctr import (build/images/)

$(IMAGES_DIR)/pause-rootfs/pause: tests/node/pause/main.go tests/node/pause/go.mod
	@mkdir -p $(@D)
	@# Static (no cgo), no paths or VCS stamp in the binary: the same source gives the same file.
	@cd tests/node/pause && CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=false -ldflags '-s -w' -o $(CURDIR)/$@ .

$(IMAGES_DIR)/pause.tar: $(IMAGES_DIR)/pause-rootfs/pause $(OCI_IMAGE_WRITER)
	@$(PYTHON) -m dra_driver.testing.oci_image --rootfs $(IMAGES_DIR)/pause-rootfs \
		--name $(PAUSE_IMAGE_NAME) --entrypoint /pause --out $@

$(TEST_IMAGE_DEBS): tests/node/testimage/packages.txt
	@echo "==> downloading the test image's Debian packages (needs apt lists: 'apt-get update' as root once)"
	@$(TEST_IMAGE_SCRIPT) download $< $(IMAGES_DIR)/debs

$(TEST_IMAGE_ROOTFS): $(TEST_IMAGE_DEBS) $(TEST_IMAGE_SCRIPT)
	@$(TEST_IMAGE_SCRIPT) rootfs $(IMAGES_DIR)/debs $(IMAGES_DIR)/dcu-test-rootfs

$(IMAGES_DIR)/dcu-test.tar: $(TEST_IMAGE_ROOTFS) $(OCI_IMAGE_WRITER)
	@$(PYTHON) -m dra_driver.testing.oci_image --rootfs $(IMAGES_DIR)/dcu-test-rootfs \
		--name $(TEST_IMAGE_NAME) --cmd /bin/sh --out $@

# ---------------------------------------------------------------------------------------------
# The real node (issue 14): kubelet, containerd + shim + ctr, runc and the CNI plugins, pinned,
# built from the Go module proxy into build/bin/node/ (tests/controlplane/README.md, "The real
# node's binaries"). Each target checks what the binaries report and builds only when that differs
# from the pin, so a warm run is a no-op; the kubelet is a `go build` in the control plane's
# module, whose cache decides. `make test` builds them; `make demo` as root.
.PHONY: node-binaries kubelet kubectl containerd runc cni
NODE_BIN := build/bin/node
# The kubelet's version is the control plane's: the k8s.io/kubernetes required in its go.mod.
KUBE_VERSION := $(shell awk '$$1 == "k8s.io/kubernetes" {print $$2; exit}' tests/controlplane/go.mod)
CONTAINERD_VERSION := v2.4.2
RUNC_VERSION := v1.5.3
CNI_PLUGINS_VERSION := v1.10.0
CNI_PLUGINS := main/bridge ipam/host-local main/loopback meta/portmap
KUBELET = $(K8S_NODE_BIN)/kubelet

node-binaries: kubelet containerd runc cni ## Build the real node's binaries into build/bin/node/ (kubelet, containerd, runc, CNI)

kubelet: ## Build the real kubelet (k8s.io/kubernetes, the control plane's module) into build/bin/node/ (K8S=1.37: that version)
	@# Like controlplane: Go rebuilds only what changed (about a second when nothing did). All but
	@# ~100 of its packages are the control plane's, so after `make controlplane` it takes ~20 s.
	@# -s -w (as upstream's release builds) only changes the link, not the shared package cache.
	@[ "$$($(KUBELET) --version 2>/dev/null)" = "Kubernetes v$(K8S_FULL)" ] \
		|| echo "==> building $(KUBELET) v$(K8S_FULL) (a cold build takes minutes)"
	@mkdir -p $(K8S_NODE_BIN)
	@cd tests/controlplane && $(GO) build $(K8S_MODFILE) -ldflags '-s -w' -o ../../$(KUBELET) ./kubelet 2>&1 | { grep -v '^go: downloading ' || true; }

KUBECTL := build/bin/kubectl
kubectl: ## Build the cluster's kubectl (k8s.io/kubectl, the control plane's module) into build/bin/
	@# ~1.5 min after `make controlplane` (most packages are shared); a no-op when up to date.
	@[ "$$($(KUBECTL) version --client 2>/dev/null | head -1)" = "Client Version: $(KUBE_VERSION)" ] \
		|| echo "==> building $(KUBECTL) $(KUBE_VERSION)"
	@mkdir -p $(dir $(KUBECTL))
	@cd tests/controlplane && $(GO) build -ldflags '-s -w' -o ../../$(KUBECTL) ./kubectl 2>&1 | { grep -v '^go: downloading ' || true; }

# containerd's own Makefile: version by ldflags, tag urfave_cli_no_docs, and the shim static
# (no cgo) with tag no_grpc. Its CRI plugin is built in and CDI is always on in 2.x.
containerd: ## Build the pinned containerd, containerd-shim-runc-v2 and ctr into build/bin/node/
	@if [ "$$($(NODE_BIN)/containerd --version 2>/dev/null | cut -d' ' -f3)" != "$(CONTAINERD_VERSION)" ] \
		|| [ "$$($(NODE_BIN)/ctr --version 2>/dev/null | cut -d' ' -f3)" != "$(CONTAINERD_VERSION)" ] \
		|| [[ "$$($(NODE_BIN)/containerd-shim-runc-v2 -v 2>/dev/null)" != *"Version:  $(CONTAINERD_VERSION)"$$'\n'* ]]; then \
		echo "==> building containerd, containerd-shim-runc-v2, ctr $(CONTAINERD_VERSION) into $(NODE_BIN) (a cold build takes minutes)"; \
		mkdir -p $(NODE_BIN); \
		ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD_VERSION)"; \
		GOBIN=$(CURDIR)/$(NODE_BIN) $(GO) install -trimpath -tags urfave_cli_no_docs -ldflags "$$ldflags" \
			github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD_VERSION) \
			github.com/containerd/containerd/v2/cmd/ctr@$(CONTAINERD_VERSION) 2>&1 | { grep -v '^go: downloading ' || true; }; \
		CGO_ENABLED=0 GOBIN=$(CURDIR)/$(NODE_BIN) $(GO) install -trimpath -tags 'urfave_cli_no_docs no_grpc' -ldflags "$$ldflags" \
			github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$(CONTAINERD_VERSION) 2>&1 | { grep -v '^go: downloading ' || true; }; \
	fi

# runc needs cgo (nsenter) and, for seccomp (the chart's pods ask for RuntimeDefault; a runc
# without it fails every such container), libseccomp's headers. Without libseccomp-dev installed,
# its Debian package is fetched with `apt-get download` (no root install) into build/ and linked
# statically; where neither works, runc is built without seccomp and says so.
RUNC_SECCOMP_DEV := build/node-deps/libseccomp-dev
runc: ## Build the pinned runc (with seccomp when libseccomp-dev is at hand) into build/bin/node/
	@if [ "$$($(NODE_BIN)/runc --version 2>/dev/null | head -1)" != "runc version $(RUNC_VERSION:v%=%)" ]; then \
		echo "==> building $(NODE_BIN)/runc $(RUNC_VERSION) (a cold build takes a minute)"; \
		mkdir -p $(NODE_BIN); \
		tags=urfave_cli_no_docs; \
		if pkg-config --exists libseccomp 2>/dev/null; then tags="$$tags seccomp"; \
		elif [ -f $(RUNC_SECCOMP_DEV)/usr/include/seccomp.h ] || { command -v apt-get >/dev/null \
			&& rm -rf $(RUNC_SECCOMP_DEV) && mkdir -p $(RUNC_SECCOMP_DEV) \
			&& (cd $(RUNC_SECCOMP_DEV) && { apt-get download -qq libseccomp-dev 2>/dev/null \
				|| { [ "$$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 \
					&& apt-get download -qq libseccomp-dev 2>/dev/null; }; }) \
			&& dpkg-deb -x $(RUNC_SECCOMP_DEV)/libseccomp-dev_*.deb $(RUNC_SECCOMP_DEV) \
			&& rm -f $(RUNC_SECCOMP_DEV)/usr/lib/*/libseccomp.so; }; then \
			tags="$$tags seccomp"; \
			export PKG_CONFIG_SYSROOT_DIR=$(CURDIR)/$(RUNC_SECCOMP_DEV); \
			export PKG_CONFIG_PATH=$$(echo $(CURDIR)/$(RUNC_SECCOMP_DEV)/usr/lib/*/pkgconfig); \
		else echo "==> runc: no libseccomp headers (libseccomp-dev): building without seccomp"; fi; \
		CGO_ENABLED=1 GOBIN=$(CURDIR)/$(NODE_BIN) $(GO) install -trimpath -tags "$$tags" -ldflags '-s -w' \
			github.com/opencontainers/runc@$(RUNC_VERSION) 2>&1 | { grep -v '^go: downloading ' || true; }; \
	fi

# As the plugins' release script: static (no cgo), version by ldflags. A plugin run without
# CNI_COMMAND prints "CNI <name> plugin <version>" (and the CNI versions it speaks).
cni: ## Build the pinned CNI plugins bridge, host-local, loopback, portmap into build/bin/node/
	@stale=; for p in $(notdir $(CNI_PLUGINS)); do \
		[ "$$($(NODE_BIN)/$$p 2>&1 </dev/null | head -1)" = "CNI $$p plugin $(CNI_PLUGINS_VERSION)" ] || stale=1; \
	done; \
	if [ -n "$$stale" ]; then \
		echo "==> building CNI plugins $(notdir $(CNI_PLUGINS)) $(CNI_PLUGINS_VERSION) into $(NODE_BIN) (a cold build takes a minute)"; \
		mkdir -p $(NODE_BIN); \
		CGO_ENABLED=0 GOBIN=$(CURDIR)/$(NODE_BIN) $(GO) install -trimpath \
			-ldflags '-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$(CNI_PLUGINS_VERSION)' \
			$(foreach p,$(CNI_PLUGINS),github.com/containernetworking/plugins/plugins/$(p)@$(CNI_PLUGINS_VERSION)) \
			2>&1 | { grep -v '^go: downloading ' || true; }; \
	fi

# The real-node prototype (issue 14): one real node (containerd, runc, CNI, the real kubelet)
# joined to the local control plane, and the e2e test that runs verify in a real container.
# Needs root on a Linux host with cgroups; the test skips, naming what is missing, otherwise.
.PHONY: test-realnode
test-realnode: $(VENV_STAMP) controlplane node-binaries images kubectl pyz ## Only the real-node tests (root): the e2e suite, the host guard, the demo on real nodes
	$(BIN)/pytest -q tests/e2e/realnode tests/testing/realnode tests/e2e/test_demo_e2e.py -k 'not fake'

# --- issue 22: Volcano and DCU shares -------------------------------------------------------
# Where quarter-card pods land on 2 mock nodes x 4 DCUs (fake kubelets, the real plugin), as the
# local control plane's kube-scheduler places them; README "With Volcano" shows the figures.
# Not part of `make test` (tests/bench/test_placement.py runs a small case there).
.PHONY: placement
PODS ?= 16
placement: $(VENV_STAMP) controlplane ## Measure how PODS (16) quarter-card pods land on 2 nodes x 4 DCUs (cards per node)
	@$(PY) -m bench.placement --pods $(PODS) --json build/placement.json

# make volcano: Volcano's scheduler and controller manager on the local control plane with mock
# DCU nodes (fake kubelets, the real plugin); one line per check with its time. The Go module
# proxy refuses volcano.sh/volcano, so make cannot build Volcano: give binaries of a Volcano
# built on Kubernetes 1.35+ libraries (VOLCANO_BIN: vc-scheduler, vc-controller-manager) and the
# same version's config/crd/volcano/bases (VOLCANO_CRDS). README "With Volcano".
.PHONY: volcano
VOLCANO_BIN ?= build/bin/volcano
VOLCANO_CRDS ?= build/volcano/crd
# vc-scheduler -v (3 logs which action binds each task); its logs are kept in build/volcano-logs.
VOLCANO_V ?= 2
volcano: $(VENV_STAMP) controlplane ## Volcano gang jobs on DCU shares through DRA (VOLCANO_BIN, VOLCANO_CRDS: see README)
	@$(PY) -m tests.volcano.suite --volcano-bin $(VOLCANO_BIN) --volcano-crds $(VOLCANO_CRDS) --json build/volcano.json \
		--logs build/volcano-logs --scheduler-v $(VOLCANO_V)

# --- issue 18: cluster scale --------------------------------------------------------------------
# A bench, not a test: N simulated nodes (a fake kubelet each, the real daemon each) under the
# real scheduler, API requests counted from the API server's audit log. The default (125 x 8 =
# 1,000 DCUs) took 34 minutes on the shared 2-core machine; results in build/scale.json.
.PHONY: scale
scale: $(VENV_STAMP) controlplane ## 1,000 DCUs on one machine: publish, API load, scheduler throughput (N=nodes DCUS=per node WAVE=pods IDLE_S=)
	@$(PY) -m bench.scale $(if $(N),--nodes $(N)) $(if $(DCUS),--dcus $(DCUS)) \
		$(if $(WAVE),--wave $(WAVE)) $(if $(IDLE_S),--idle-s $(IDLE_S)) --json build/scale.json

# ---------------------------------------------------------------------------------------------
# Kubernetes versions (issue 19): one control-plane source tree builds every version we claim.
# The default is tests/controlplane/go.mod's (1.36.3); each other version has a go.mod of its own,
# tests/controlplane/versions/<minor>/go.mod, written by versions/modfile.py from that release's
# go.mod (make controlplane-modfiles), and `go build -modfile=` builds with it. K8S=<minor> or
# K8S=<minor.patch> picks one for `make controlplane` and `make kubelet`; its binaries go to
# build/bin/k8s-<version>/ (controlplane, node/kubelet). A cold build of one version downloads
# its modules (hundreds of MB) and compiles for tens of minutes on the 2-core machine.
.PHONY: controlplane-modfiles matrix matrix-table
K8S_VERSIONS := 1.34.4 1.35.4 1.36.3 1.37.2
K8S_DEFAULT := $(KUBE_VERSION:v%=%)
K8S ?=
K8S_FULL := $(if $(K8S),$(or $(firstword $(filter $(K8S:v%=%) $(K8S:v%=%).%,$(K8S_VERSIONS))),$(error K8S=$(K8S) is not a version we build: pick one of $(K8S_VERSIONS) (or its minor, e.g. K8S=1.37))),$(K8S_DEFAULT))
K8S_MINOR := $(basename $(K8S_FULL))
K8S_IS_DEFAULT := $(filter $(K8S_DEFAULT),$(K8S_FULL))
K8S_BIN := $(if $(K8S_IS_DEFAULT),build/bin,build/bin/k8s-$(K8S_FULL))
K8S_NODE_BIN := $(if $(K8S_IS_DEFAULT),$(NODE_BIN),build/bin/k8s-$(K8S_FULL)/node)
K8S_MODFILE := $(if $(K8S_IS_DEFAULT),,-modfile=versions/$(K8S_MINOR)/go.mod)

controlplane-modfiles: ## Write tests/controlplane/versions/*/go.mod again (non-default versions)
	@$(PYTHON) tests/controlplane/versions/modfile.py $(filter-out $(K8S_DEFAULT),$(K8S_VERSIONS))

# make matrix: the smoke suite (dra_driver/tools/matrix) on each version's own control plane and
# real kubelet, as root on real nodes; one table, build/matrix.json. Builds each version first
# (cold: tens of minutes per version; warm: seconds). VERSIONS=1.37 or VERSIONS=1.34,1.35 runs
# only those. Not part of make test.
comma := ,
space := $(empty) $(empty)
MATRIX_VERSIONS := $(if $(VERSIONS),$(subst $(comma), ,$(VERSIONS)),$(K8S_VERSIONS))
matrix: $(VENV_STAMP) helm containerd runc cni images ## The smoke suite on every Kubernetes version we claim, one table (VERSIONS=1.37: only those; real nodes, root)
	@for v in $(MATRIX_VERSIONS); do $(MAKE) --no-print-directory controlplane kubelet K8S=$$v; done
	@$(PY) -m dra_driver.tools.matrix run --versions $(subst $(space),$(comma),$(strip $(MATRIX_VERSIONS)))

matrix-table: $(VENV_STAMP) ## Regenerate the README's compatibility table from build/matrix.json (the last make matrix)
	@$(PY) -m dra_driver.tools.matrix readme
