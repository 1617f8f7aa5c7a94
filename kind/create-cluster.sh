#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Create the demo's kind cluster: a control plane and two workers labelled as DCU nodes.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

need docker kind kubectl

if cluster_exists; then
    echo "kind cluster ${CLUSTER_NAME} already exists (delete it with kind/delete-cluster.sh)"
    exit 0
fi

config="$(mktemp)"
trap 'rm -f "${config}"' EXIT
write_kind_config >"${config}"

step "creating kind cluster ${CLUSTER_NAME} from ${KIND_IMAGE}"
kind create cluster --name "${CLUSTER_NAME}" --image "${KIND_IMAGE}" --config "${config}" \
    --wait "${WAIT_SECONDS}s"
kctl get nodes --label-columns hygon.com/dcu.present

echo "cluster ${CLUSTER_NAME} is ready (kubectl context ${KUBE_CONTEXT}); next: kind/demo.sh"
