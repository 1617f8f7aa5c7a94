"""KubeClient verbs, watches and error mapping against the real local control plane."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

from dra_driver.cluster.kube import (
    AlreadyExists,
    AnswerTooDeepError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Invalid,
    KubeClient,
    KubeConfig,
    KubeError,
    NotFound,
    paths,
)
from dra_driver.testing.cluster import (
    ControlPlane,
    unique_name,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def kube(control_plane: ControlPlane) -> KubeClient:
    return control_plane.client


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"suite": "client"}},
        "data": data,
    }


def test_create_get_replace_delete_round_trip(kube: KubeClient, ns: str) -> None:
    name = unique_name("cm")
    created = kube.create(paths.configmaps(ns), configmap(name, a="1"))
    fetched = kube.get(paths.configmaps(ns, name))
    fetched["data"]["a"] = "2"
    replaced = kube.replace(paths.configmaps(ns, name), fetched)
    deleted = kube.delete(
        paths.configmaps(ns, name), preconditions={"uid": created["metadata"]["uid"]}
    )

    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    assert replaced["data"] == {"a": "2"}
    assert deleted["kind"] in ("Status", "ConfigMap")
    with pytest.raises(NotFound):
        kube.get(paths.configmaps(ns, name))


@pytest.mark.parametrize(
    ("patch_type", "body", "expected"),
    [
        ("merge", {"data": {"b": "2"}}, {"a": "1", "b": "2"}),
        ("strategic", {"data": {"b": "2"}}, {"a": "1", "b": "2"}),
        ("json", [{"op": "replace", "path": "/data/a", "value": "9"}], {"a": "9"}),
    ],
    ids=["merge", "strategic", "json"],
)
def test_patch_types(
    kube: KubeClient, ns: str, patch_type: Any, body: Any, expected: dict[str, str]
) -> None:
    name = unique_name("cm")
    kube.create(paths.configmaps(ns), configmap(name, a="1"))

    patched = kube.patch(paths.configmaps(ns, name), body, patch_type=patch_type)

    assert patched["data"] == expected


def test_server_side_apply_creates_and_records_the_field_manager(kube: KubeClient, ns: str) -> None:
    name = unique_name("cm")
    body = {**configmap(name, a="1"), "metadata": {"name": name, "namespace": ns}}

    applied = kube.patch(
        paths.configmaps(ns, name), body, patch_type="apply", field_manager="tests", force=True
    )

    assert applied["data"] == {"a": "1"}
    assert [entry["manager"] for entry in applied["metadata"]["managedFields"]] == ["tests"]


def test_list_filters_by_label_and_field_selector(kube: KubeClient, ns: str) -> None:
    first, second = unique_name("cm"), unique_name("cm")
    kube.create(paths.configmaps(ns), configmap(first))
    kube.create(paths.configmaps(ns), {**configmap(second), "metadata": {"name": second}})

    by_label = kube.list(paths.configmaps(ns), label_selector="suite=client")
    by_field = kube.list(paths.configmaps(ns), field_selector=f"metadata.name={second}")

    assert first in [item["metadata"]["name"] for item in by_label["items"]]
    assert second not in [item["metadata"]["name"] for item in by_label["items"]]
    assert [item["metadata"]["name"] for item in by_field["items"]] == [second]
    assert by_label["metadata"]["resourceVersion"]


def test_delete_collection_removes_matching_objects(kube: KubeClient, ns: str) -> None:
    label = unique_name("batch")
    for _ in range(2):
        kube.create(
            paths.configmaps(ns),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"generateName": "cm-", "labels": {"batch": label}},
            },
        )

    kube.delete_collection(paths.configmaps(ns), label_selector=f"batch={label}")

    assert kube.list(paths.configmaps(ns), label_selector=f"batch={label}")["items"] == []


def test_missing_object_raises_not_found_naming_request_and_message(
    kube: KubeClient, ns: str
) -> None:
    path = paths.configmaps(ns, "absent")

    with pytest.raises(NotFound) as caught:
        kube.get(path)

    assert str(caught.value) == f'GET {path}: 404 NotFound: configmaps "absent" not found'


def test_creating_an_existing_name_raises_already_exists(kube: KubeClient, ns: str) -> None:
    name = unique_name("cm")
    kube.create(paths.configmaps(ns), configmap(name))

    with pytest.raises(AlreadyExists, match=rf'^POST .*: 409 AlreadyExists: configmaps "{name}"'):
        kube.create(paths.configmaps(ns), configmap(name))


def test_stale_resource_version_raises_conflict(kube: KubeClient, ns: str) -> None:
    name = unique_name("cm")
    stale = kube.create(paths.configmaps(ns), configmap(name, a="1"))
    kube.patch(paths.configmaps(ns, name), {"data": {"a": "2"}})

    with pytest.raises(Conflict) as caught:
        kube.replace(paths.configmaps(ns, name), stale)

    assert not isinstance(caught.value, AlreadyExists)
    assert caught.value.reason == "Conflict"


def test_failed_uid_precondition_raises_conflict(kube: KubeClient, ns: str) -> None:
    name = unique_name("cm")
    kube.create(paths.configmaps(ns), configmap(name))

    with pytest.raises(
        Conflict, match=r"the UID in the precondition \(wrong\) does not match the UID in record"
    ):
        kube.delete(paths.configmaps(ns, name), preconditions={"uid": "wrong"})


def test_invalid_object_raises_invalid(kube: KubeClient, ns: str) -> None:
    with pytest.raises(Invalid, match=r"^POST .*: 422 Invalid: ConfigMap \"Not_Valid\" is invalid"):
        kube.create(paths.configmaps(ns), configmap("Not_Valid"))


def test_anonymous_client_is_forbidden(control_plane: ControlPlane) -> None:
    admin = control_plane.client.config
    anonymous = KubeClient(KubeConfig(server=admin.server, ca_pem=admin.ca_pem, source="anon"))

    with anonymous, pytest.raises(Forbidden, match=r'User "system:anonymous" cannot list'):
        anonymous.list(paths.nodes())


def test_bearer_token_authenticates_a_service_account(kube: KubeClient, ns: str) -> None:
    name = unique_name("sa")
    kube.create(
        paths.service_accounts(ns),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
    )
    token = kube.create(
        paths.service_accounts(ns, name) + "/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    admin = kube.config
    config = KubeConfig(server=admin.server, ca_pem=admin.ca_pem, token=token, source="sa")

    with KubeClient(config) as client, pytest.raises(Forbidden) as caught:
        client.list(paths.configmaps(ns))

    assert f'User "system:serviceaccount:{ns}:{name}" cannot list' in caught.value.message


def test_unreachable_server_raises_connection_failed() -> None:
    client = KubeClient(KubeConfig(server="http://127.0.0.1:1", source="nowhere"))

    with client, pytest.raises(ConnectionFailed, match=r"^GET /api/v1/nodes: connection failed: "):
        client.get(paths.nodes())


def test_watch_streams_added_modified_deleted(kube: KubeClient, ns: str) -> None:
    name = unique_name("cm")
    version = kube.list(paths.configmaps(ns))["metadata"]["resourceVersion"]
    stream = kube.watch(
        paths.configmaps(ns),
        resource_version=version,
        field_selector=f"metadata.name={name}",
        timeout_s=30,
    )
    kube.create(paths.configmaps(ns), configmap(name, a="1"))
    kube.patch(paths.configmaps(ns, name), {"data": {"a": "2"}})
    kube.delete(paths.configmaps(ns, name))

    events: list[tuple[str, str | None]] = []
    with stream:
        for event_type, obj in stream:
            if event_type != "BOOKMARK":
                events.append((event_type, (obj.get("data") or {}).get("a")))
            if event_type == "DELETED":
                break

    assert events == [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")]


def test_closing_a_watch_from_another_thread_ends_iteration(kube: KubeClient, ns: str) -> None:
    version = kube.list(paths.configmaps(ns))["metadata"]["resourceVersion"]
    stream = kube.watch(
        paths.configmaps(ns),
        resource_version=version,
        field_selector="metadata.name=never",
        timeout_s=120,
    )
    timer = threading.Timer(0.5, stream.close)
    started = time.monotonic()
    timer.start()

    events = list(stream)

    assert time.monotonic() - started < 5
    assert all(event_type == "BOOKMARK" for event_type, _ in events)


def test_an_answer_nested_deeper_than_python_decodes_is_a_kube_error(
    kube: KubeClient, ns: str
) -> None:
    """The API server keeps opaque parameters nested far deeper than json.loads can follow."""
    deep: list[Any] = []
    for _ in range(2000):
        deep = [deep]
    name = unique_name("deep")
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {
            "devices": {
                "requests": [{"name": "r", "exactly": {"deviceClassName": "any"}}],
                "config": [
                    {
                        "opaque": {
                            "driver": "dcu.hygon.com",
                            "parameters": {"apiVersion": "v1", "kind": "X", "deep": deep},
                        }
                    }
                ],
            }
        },
    }
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)  # only to send it (and read the answer to the create)
    try:
        kube.create(paths.resource_claims(ns), claim)
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(
        AnswerTooDeepError, match=r"answer nests too deeply to decode \(\d+ bytes\)$"
    ):
        kube.get(paths.resource_claims(ns, name))
    with pytest.raises(KubeError, match="nests too deeply"):  # DELETE answers with the object
        kube.delete(paths.resource_claims(ns, name))
    with pytest.raises(NotFound):
        kube.get(paths.resource_claims(ns, name))
