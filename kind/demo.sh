#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The kind demo: build and load the driver image, install the chart with mock DCUs, run the
# examples in deploy/examples/ and show what each pod got (its node, its DCUs as hy-smi reports
# them, its vDCU config, and `dcu-dra verify` run inside it). Needs the cluster from
# kind/create-cluster.sh.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/common.sh"

need docker kind helm kubectl make

cluster_exists ||
    die "no kind cluster named ${CLUSTER_NAME}: run kind/create-cluster.sh first"

step "building the driver image ${IMAGE}"
make image IMAGE="${IMAGE}"

# The example image has python3 but not dcu-dra: each pod gets this one file to run verify from.
pyz="build/dist/dcu-dra.pyz"
step "building ${pyz}, the one-file dcu-dra that runs verify inside the example pods"
make pyz
[[ -f "${pyz}" ]] || die "make pyz wrote no ${pyz}"

step "loading ${IMAGE} into kind cluster ${CLUSTER_NAME}"
kind load docker-image "${IMAGE}" --name "${CLUSTER_NAME}"

step "installing the chart in ${NAMESPACE} with mock DCUs on nodes labelled hygon.com/dcu.present=true"
helm upgrade --install "${RELEASE}" "${CHART}" --kube-context "${KUBE_CONTEXT}" \
    --namespace "${NAMESPACE}" --create-namespace \
    --set mock.enabled=true \
    --set image.repository="${IMAGE_REPOSITORY}" --set image.tag="${IMAGE_TAG}" \
    --set image.pullPolicy=IfNotPresent \
    --wait --timeout "${WAIT_SECONDS}s"
kctl get deviceclasses "${DRIVER_NAME}" "vdcu.${DRIVER_NAME}" >/dev/null ||
    die "the chart installed no DeviceClasses ${DRIVER_NAME} and vdcu.${DRIVER_NAME}; the examples need them"

step "waiting for one ResourceSlice of ${DRIVER_NAME} per DCU node"
nodes="$(kctl get nodes --selector hygon.com/dcu.present=true --output name | wc -l)"
((nodes > 0)) || die "no node is labelled hygon.com/dcu.present=true (see kind/cluster-config.yaml)"
for ((waited = 0; ; waited += 2)); do
    slices="$(kctl get resourceslices --field-selector "spec.driver=${DRIVER_NAME}" --output name | wc -l)"
    ((slices >= nodes)) && break
    ((waited < WAIT_SECONDS)) || die "${slices} of ${nodes} ResourceSlices after ${WAIT_SECONDS}s; see: kubectl --context ${KUBE_CONTEXT} -n ${NAMESPACE} logs --all-containers -l app.kubernetes.io/instance=${RELEASE}"
    sleep 2
done
kctl get resourceslices --field-selector "spec.driver=${DRIVER_NAME}"

step "applying deploy/examples/*.yaml"
applied="$(kctl apply --filename deploy/examples/ --output name)"
echo "${applied}"
namespaces=()
while read -r ns; do namespaces+=("${ns}"); done < <(sed -n 's|^namespace/||p' <<<"${applied}")
((${#namespaces[@]} > 0)) || die "deploy/examples/ created no namespace"

step "waiting for the example pods to run"
for ns in "${namespaces[@]}"; do
    kctl --namespace "${ns}" wait pod --all --for=condition=Ready --timeout="${WAIT_SECONDS}s" ||
        die "pods in ${ns} are not ready; see: kubectl --context ${KUBE_CONTEXT} -n ${ns} describe pods"
done

step "what each pod got"
failed=()
for ns in "${namespaces[@]}"; do
    names="$(kctl --namespace "${ns}" get pods --output jsonpath='{.items[*].metadata.name}')"
    read -ra pods <<<"${names}"
    for pod in "${pods[@]}"; do
        node="$(kctl --namespace "${ns}" get pod "${pod}" --output jsonpath='{.spec.nodeName}')"
        echo
        echo "--- pod ${ns}/${pod} on node ${node}"
        echo "\$ hy-smi virtual -show-device-info"
        kctl --namespace "${ns}" exec "${pod}" -- /opt/hyhal/bin/hy-smi virtual -show-device-info
        echo "\$ cat /etc/vdev/docker/vdev*.conf"
        # shellcheck disable=SC2016  # expanded by the container's sh, not here
        kctl --namespace "${ns}" exec "${pod}" -- sh -c '
            set -- /etc/vdev/docker/vdev*.conf
            if [ -e "$1" ]; then cat "$@"; else echo "(no vdev file: a whole DCU, no vDCU limits)"; fi'
        echo "\$ python3 /tmp/dcu-dra.pyz verify    # ${pyz}, copied in with kubectl exec -i"
        kctl --namespace "${ns}" exec -i "${pod}" -- sh -c 'cat > /tmp/dcu-dra.pyz' <"${pyz}"
        kctl --namespace "${ns}" exec "${pod}" -- python3 /tmp/dcu-dra.pyz verify ||
            failed+=("${ns}/${pod}")
    done
done

echo
step "the claims and what they consumed"
kctl get resourceclaims --all-namespaces --output \
    custom-columns='NAMESPACE:.metadata.namespace,CLAIM:.metadata.name,DEVICE:.status.allocation.devices.results[*].device,CONSUMED:.status.allocation.devices.results[*].consumedCapacity'

((${#failed[@]} == 0)) ||
    die "dcu-dra verify failed in pod(s) ${failed[*]}: see the FAIL lines of their reports above"

echo
echo "demo done; remove the examples with: kubectl --context ${KUBE_CONTEXT} delete -f deploy/examples/"
