"""ObjectReader against the real local control plane: TLS, client certificates, tokens, errors."""

from __future__ import annotations

from typing import Any

import pytest

from dra_driver.cluster.kube import (
    Forbidden,
    KubeClient,
    KubeConfig,
    NotFound,
    paths,
)
from dra_driver.testing.cluster import (
    ControlPlane,
    unique_name,
)

pytestmark = pytest.mark.e2e


def claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [{"name": "r", "exactly": {"deviceClassName": "c"}}]}},
    }


def test_reads_a_claim_over_tls_with_a_client_certificate_as_the_client_does(
    control_plane: ControlPlane, ns: str
) -> None:
    kube = control_plane.client
    name = unique_name("claim")
    kube.create(paths.resource_claims(ns), claim(name))

    with KubeClient(kube.config) as client:
        read = [client.reader.get(paths.resource_claims(ns, name)) for _ in range(3)]

    assert read[0] == kube.get(paths.resource_claims(ns, name))
    assert read[0] == read[1] == read[2]


def test_a_missing_claim_is_not_found_with_the_servers_message(
    control_plane: ControlPlane, ns: str
) -> None:
    path = paths.resource_claims(ns, "missing")

    with (
        KubeClient(control_plane.client.config) as client,
        pytest.raises(
            NotFound,
            match=rf'^GET {path}: 404 NotFound: resourceclaims\S+ "missing" not found$',
        ),
    ):
        client.reader.get(path)


def test_an_anonymous_reader_is_forbidden(control_plane: ControlPlane, ns: str) -> None:
    admin = control_plane.client.config
    config = KubeConfig(server=admin.server, ca_pem=admin.ca_pem, source="anon")

    with KubeClient(config) as client, pytest.raises(Forbidden, match=r'"system:anonymous"'):
        client.reader.get(paths.resource_claims(ns, "any"))


def test_a_service_account_token_authenticates(control_plane: ControlPlane, ns: str) -> None:
    kube = control_plane.client
    name = unique_name("sa")
    kube.create(
        paths.service_accounts(ns),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    token = kube.create(
        paths.service_accounts(ns, name) + "/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    config = KubeConfig(server=kube.config.server, ca_pem=kube.config.ca_pem, token=token)

    with KubeClient(config) as client, pytest.raises(Forbidden) as caught:
        client.reader.get(paths.resource_claims(ns, "any"))

    assert f'User "system:serviceaccount:{ns}:{name}" cannot get' in caught.value.message
