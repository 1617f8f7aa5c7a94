"""The kubelet plugin's own identity: deploy/rbac.yaml's ServiceAccount, as a DaemonSet pod has it.

A DaemonSet pod of the chart authenticates with a projected ServiceAccount token bound to the
pod, hence to its node; the API server then knows the caller's node
(``authentication.kubernetes.io/node-name``), which deploy/admission-slices.yaml checks. Tests
and the demo run the plugin as a host process, so they hand it the same kind of token:

- :func:`create_plugin_pod`: a Pod of the plugin's ServiceAccount on a node (it only holds the
  identity: with a real kubelet it runs the pause image, on a bare Node it never runs);
- :func:`request_plugin_token`: a token of the account (TokenRequest), bound to that Pod;
- :func:`token_kubeconfig`: the admin kubeconfig's cluster with that token as its only user.

What it does not model: the kubelet refreshing the projected token (here it is requested once,
valid for ``expiration_s``), and the pod's own mounts (the plugin runs on the host).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dra_driver.cluster.kube import KubeClient, paths
from dra_driver.testing.cluster import REPO_ROOT, ensure_object, load_yaml, unique_name

#: Where deploy/rbac.yaml puts the kubelet plugin's ServiceAccount.
PLUGIN_NAMESPACE = "dcu-dra"
PLUGIN_ACCOUNT = "dcu-dra-kubelet-plugin"
RBAC_FILE = REPO_ROOT / "deploy" / "rbac.yaml"
#: A bound token's lifetime: long enough for a demo kept running for a working day.
DEFAULT_EXPIRATION_S = 24 * 3600


def ensure_plugin_account(client: KubeClient) -> None:
    """Create deploy/rbac.yaml's objects that are missing (existing ones are kept)."""
    for obj in load_yaml(RBAC_FILE.read_text()):
        ensure_object(client, obj)


def create_plugin_pod(kube: KubeClient, node: str, *, image: str) -> dict[str, Any]:
    """A Pod of the plugin's ServiceAccount on ``node``; delete it afterwards.

    Create the Node first: a token bound to the Pod records the Pod's node.
    """
    return kube.create(
        paths.pods(PLUGIN_NAMESPACE),
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": unique_name("plugin"), "namespace": PLUGIN_NAMESPACE},
            "spec": {
                "nodeName": node,
                "serviceAccountName": PLUGIN_ACCOUNT,
                "containers": [
                    {"name": "plugin", "image": image, "imagePullPolicy": "IfNotPresent"}
                ],
                # What the chart's DaemonSet tolerates: the plugin must run on a tainted node.
                "tolerations": [{"operator": "Exists"}],
            },
        },
    )


def request_plugin_token(
    kube: KubeClient,
    *,
    bound_pod: Mapping[str, Any] | None,
    expiration_s: int = 3600,
) -> str:
    """A token of the plugin's ServiceAccount (TokenRequest API), optionally bound to a Pod."""
    spec: dict[str, Any] = {"expirationSeconds": expiration_s}
    if bound_pod is not None:
        metadata = bound_pod["metadata"]
        spec["boundObjectRef"] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": metadata["name"],
            "uid": metadata["uid"],
        }
    answer = kube.create(
        paths.service_accounts(PLUGIN_NAMESPACE, PLUGIN_ACCOUNT) + "/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    return str(answer["status"]["token"])


def token_kubeconfig(
    admin_kubeconfig: Path, token: str, directory: Path, *, name: str = "token.kubeconfig"
) -> Path:
    """The admin kubeconfig's cluster (server, CA) with ``token`` as the only user; mode 0600."""
    document = yaml.safe_load(admin_kubeconfig.read_text())
    document["users"] = [{"name": "token", "user": {"token": token}}]
    for context in document["contexts"]:
        context["context"]["user"] = "token"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(document))
    return path
