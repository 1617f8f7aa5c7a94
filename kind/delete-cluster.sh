#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Delete the demo's kind cluster (and with it everything the demo installed).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

need docker kind

step "deleting kind cluster ${CLUSTER_NAME}"
kind delete cluster --name "${CLUSTER_NAME}"

echo "cluster ${CLUSTER_NAME} is gone"
