#!/usr/bin/env bash
# Sourced by the other kind/*.sh scripts: every tunable (set any of them in the environment to
# override it), the checks for the tools they need, and small helpers. Sourcing it also moves
# to the repository root, so the scripts run from any directory.
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
set -euo pipefail

REPO_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"

: "${CLUSTER_NAME:=dcu-dra}"
# v1.34.x and v1.35.x work too; the script then turns on the feature gates they need.
: "${K8S_VERSION:=v1.36.1}"
: "${KIND_IMAGE:=kindest/node:${K8S_VERSION}}"
: "${KIND_CONFIG:=${REPO_ROOT}/kind/cluster-config.yaml}"
# The driver image that demo.sh builds (make image) and loads into the cluster.
: "${IMAGE:=dcu-dra:dev}"
: "${NAMESPACE:=dcu-dra}"
: "${RELEASE:=dcu-dra}"
: "${CHART:=${REPO_ROOT}/deploy/helm/dcu-dra-driver}"
# The chart's default driver name; not a tunable, deploy/examples name its DeviceClasses.
DRIVER_NAME="dcu.hygon.com"
# How long each wait (chart rollout, ResourceSlices, example pods) may take.
: "${WAIT_SECONDS:=300}"

# kind names the kubeconfig context after the cluster; every call names it explicitly so the
# scripts never act on whatever cluster happens to be the current context.
KUBE_CONTEXT="kind-${CLUSTER_NAME}"

# The chart takes the image as repository + tag; an image without a tag means :latest.
if [[ "${IMAGE##*/}" == *:* ]]; then
    IMAGE_REPOSITORY="${IMAGE%:*}"
    IMAGE_TAG="${IMAGE##*:}"
else
    IMAGE_REPOSITORY="${IMAGE}"
    IMAGE_TAG="latest"
fi

step() { echo "==> $*"; }

die() {
    echo "kind/${0##*/}: $*" >&2
    exit 1
}

kctl() { kubectl --context "${KUBE_CONTEXT}" "$@"; }

# Whether kind has a cluster named CLUSTER_NAME. (Not `kind ... | grep -q`: under pipefail, grep
# quitting early can fail the pipeline with SIGPIPE.)
cluster_exists() {
    local clusters
    clusters="$(kind get clusters 2>/dev/null)"
    grep -qx "${CLUSTER_NAME}" <<<"${clusters}"
}

# Where to get each tool the scripts use.
where_to_get() {
    case "$1" in
        docker) echo "install Docker Engine: https://docs.docker.com/engine/install/" ;;
        kind) echo "install kind v0.32.0 or newer: https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
        helm) echo "install Helm: https://helm.sh/docs/intro/install/" ;;
        kubectl) echo "install kubectl: https://kubernetes.io/docs/tasks/tools/" ;;
        make) echo "install GNU make from your distribution's packages" ;;
        *) echo "install it" ;;
    esac
}

# need TOOL...: stop before doing anything, naming each missing tool and where to get it.
need() {
    local tool missing=0
    for tool in "$@"; do
        if ! command -v "${tool}" >/dev/null 2>&1; then
            echo "kind/${0##*/}: needs ${tool}, which is not on PATH; $(where_to_get "${tool}")" >&2
            missing=1
        fi
    done
    ((missing == 0)) || exit 1
    if [[ " $* " == *" docker "* ]] && ! docker info >/dev/null 2>&1; then
        die "docker is installed but no Docker engine answers ('docker info' failed); start it"
    fi
}

# The minor version of K8S_VERSION (v1.35.2 -> 35).
k8s_minor() {
    local minor="${K8S_VERSION#v}"
    minor="${minor#1.}"
    minor="${minor%%.*}"
    [[ "${minor}" =~ ^[0-9]+$ ]] || die "K8S_VERSION=${K8S_VERSION} is not a version like v1.36.1"
    echo "${minor}"
}

# Print the kind cluster config for K8S_VERSION: cluster-config.yaml as is for 1.36 and newer,
# plus the feature gates 1.34 and 1.35 need (see the comments in cluster-config.yaml).
write_kind_config() {
    local minor
    minor="$(k8s_minor)"
    ((minor >= 34)) || die "K8S_VERSION=${K8S_VERSION}: the driver needs Kubernetes 1.34 or newer (resource.k8s.io/v1)"
    cat "${KIND_CONFIG}"
    if ((minor < 36)); then
        cat <<'GATES'
featureGates:
  DRAConsumableCapacity: true
  ResourceHealthStatus: true
  DRAExtendedResource: true
  DRADeviceTaints: true
GATES
    fi
    # 1.34 has no DRADeviceTaintRules gate: DRADeviceTaints alone makes the scheduler watch
    # DeviceTaintRules, served only in resource.k8s.io/v1alpha3, off by default; without it the
    # scheduler never becomes ready (found by make matrix on 1.34.4).
    if ((minor == 34)); then
        cat <<'RUNTIME'
runtimeConfig:
  resource.k8s.io/v1alpha3: "true"
RUNTIME
    fi
}
