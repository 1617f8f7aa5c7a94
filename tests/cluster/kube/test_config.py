"""Kubeconfig and in-cluster settings are read the way client-go reads them."""

from __future__ import annotations

import base64
import os
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dra_driver.cluster.kube.config import (
    KubeConfig,
    TokenSource,
    load_incluster_config,
    load_kubeconfig,
    ssl_context,
)
from dra_driver.cluster.kube.errors import KubeConfigError


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


@pytest.fixture(scope="module")
def pem() -> Iterator[Pem]:
    """A self-signed EC certificate and key (used as CA and as client certificate)."""
    with tempfile.TemporaryDirectory() as directory:
        cert, key = Path(directory) / "cert.pem", Path(directory) / "key.pem"
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-days",
                "1",
                "-subj",
                "/CN=dcu-dra-test",
            ],
            check=True,
            capture_output=True,
        )
        yield Pem(cert=cert.read_bytes(), key=key.read_bytes())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


KubeconfigWriter = Callable[..., Path]


@pytest.fixture
def write_kubeconfig(tmp_path: Path) -> KubeconfigWriter:
    """Write a one-context kubeconfig with the given cluster and user entries."""

    def write(
        cluster: dict[str, Any], user: dict[str, Any], *, namespace: str | None = None
    ) -> Path:
        context: dict[str, Any] = {"cluster": "c", "user": "u"}
        if namespace:
            context["namespace"] = namespace
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "ctx",
            "clusters": [{"name": "c", "cluster": cluster}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "ctx", "context": context}],
        }
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(document))
        return path

    return write


def test_token_kubeconfig_gives_server_token_and_namespace(
    write_kubeconfig: KubeconfigWriter,
) -> None:
    path = write_kubeconfig(
        {"server": "https://127.0.0.1:6443/"}, {"token": "abc"}, namespace="team"
    )

    config = load_kubeconfig(path)

    assert config.server == "https://127.0.0.1:6443"
    assert config.token == "abc"
    assert config.namespace == "team"
    assert (config.client_cert_pem, config.client_key_pem, config.ca_pem) == (None, None, None)
    assert TokenSource(token=config.token).current() == "abc"


def test_namespace_defaults_to_default(write_kubeconfig: KubeconfigWriter) -> None:
    config = load_kubeconfig(write_kubeconfig({"server": "https://h:1"}, {"token": "t"}))

    assert config.namespace == "default"


def test_embedded_client_certificate_and_ca_data_are_decoded(
    write_kubeconfig: KubeconfigWriter, pem: Pem
) -> None:
    path = write_kubeconfig(
        {"server": "https://h:1", "certificate-authority-data": b64(pem.cert)},
        {"client-certificate-data": b64(pem.cert), "client-key-data": b64(pem.key)},
    )

    config = load_kubeconfig(path)

    assert config.ca_pem == pem.cert
    assert config.client_cert_pem == pem.cert
    assert config.client_key_pem == pem.key


def test_certificate_files_are_resolved_relative_to_the_kubeconfig(
    write_kubeconfig: KubeconfigWriter, pem: Pem, tmp_path: Path
) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.crt").write_bytes(pem.cert)
    (tmp_path / "pki" / "client.crt").write_bytes(pem.cert)
    (tmp_path / "pki" / "client.key").write_bytes(pem.key)
    path = write_kubeconfig(
        {"server": "https://h:1", "certificate-authority": "pki/ca.crt"},
        {"client-certificate": "pki/client.crt", "client-key": "pki/client.key"},
    )

    config = load_kubeconfig(path)

    assert (config.ca_pem, config.client_cert_pem, config.client_key_pem) == (
        pem.cert,
        pem.cert,
        pem.key,
    )


def test_data_takes_precedence_over_a_file(write_kubeconfig: KubeconfigWriter, pem: Pem) -> None:
    path = write_kubeconfig(
        {
            "server": "https://h:1",
            "certificate-authority": "/does/not/exist",
            "certificate-authority-data": b64(pem.cert),
        },
        {"token": "t"},
    )

    assert load_kubeconfig(path).ca_pem == pem.cert


def test_ssl_context_loads_client_certificate_without_leaving_key_files(
    write_kubeconfig: KubeconfigWriter,
    pem: Pem,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    config = load_kubeconfig(
        write_kubeconfig(
            {"server": "https://h:1", "certificate-authority-data": b64(pem.cert)},
            {"client-certificate-data": b64(pem.cert), "client-key-data": b64(pem.key)},
        )
    )

    context = ssl_context(config)

    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [cert["subject"] for cert in context.get_ca_certs()] == [
        ((("commonName", "dcu-dra-test"),),)
    ]
    assert list(scratch.iterdir()) == []


def test_insecure_skip_tls_verify_disables_verification(
    write_kubeconfig: KubeconfigWriter,
) -> None:
    config = load_kubeconfig(
        write_kubeconfig({"server": "https://h:1", "insecure-skip-tls-verify": True}, {})
    )

    context = ssl_context(config)

    assert config.insecure_skip_tls_verify
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


def test_invalid_ca_data_is_a_config_error() -> None:
    config = KubeConfig(server="https://h:1", ca_pem=b"not a certificate", source="test")

    with pytest.raises(KubeConfigError, match=r"^test: invalid CA certificate data: "):
        ssl_context(config)


def test_token_file_is_reread_after_the_interval(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    now = [0.0]
    source = TokenSource(token_file=token_file, reread_after_s=60.0, clock=lambda: now[0])

    first = source.current()
    token_file.write_text("second\n")
    now[0] = 59.0
    still_first = source.current()
    now[0] = 60.0
    second = source.current()

    assert (first, still_first, second) == ("first", "first", "second")


def test_token_file_that_disappears_keeps_the_last_token(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("kept")
    now = [0.0]
    source = TokenSource(token_file=token_file, reread_after_s=1.0, clock=lambda: now[0])
    source.current()
    token_file.unlink()
    now[0] = 5.0

    assert source.current() == "kept"


def test_user_token_file_is_resolved_relative_to_the_kubeconfig(
    write_kubeconfig: KubeconfigWriter, tmp_path: Path
) -> None:
    config = load_kubeconfig(write_kubeconfig({"server": "https://h:1"}, {"tokenFile": "tok"}))

    assert config.token_file == tmp_path / "tok"


@pytest.mark.parametrize(
    ("user", "message"),
    [
        (
            {"exec": {"command": "aws"}},
            r"^kubeconfig .*: user 'u' uses 'exec', which this client does not support; ",
        ),
        (
            {"client-certificate-data": "Zm9v"},
            r"^kubeconfig .*: user 'u' needs both a client certificate and key$",
        ),
        ({"client-key-data": "%%%"}, r"^kubeconfig .*: client-key-data is not valid base64$"),
    ],
    ids=["exec-plugin", "cert-without-key", "bad-base64"],
)
def test_unusable_users_are_rejected(
    write_kubeconfig: KubeconfigWriter, user: dict[str, Any], message: str
) -> None:
    path = write_kubeconfig({"server": "https://h:1"}, user)

    with pytest.raises(KubeConfigError, match=message):
        load_kubeconfig(path)


def test_missing_context_is_named(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({"current-context": "nope", "contexts": []}))

    with pytest.raises(KubeConfigError, match=r"^kubeconfig .*, context 'nope': no entry 'nope'"):
        load_kubeconfig(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match=r"^kubeconfig .*/absent: cannot read: "):
        load_kubeconfig(tmp_path / "absent")


@pytest.fixture
def service_account_dir(tmp_path: Path, pem: Pem) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("sa-token\n")
    (directory / "ca.crt").write_bytes(pem.cert)
    (directory / "namespace").write_text("dcu-system")
    return directory


def test_in_cluster_config_uses_service_env_and_mounted_files(
    service_account_dir: Path, pem: Pem
) -> None:
    config = load_incluster_config(
        service_account_dir=service_account_dir,
        environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
    )

    assert config.server == "https://10.0.0.1:443"
    assert config.ca_pem == pem.cert
    assert config.token_file == service_account_dir / "token"
    assert config.namespace == "dcu-system"
    assert TokenSource(token_file=config.token_file).current() == "sa-token"


def test_in_cluster_ipv6_host_is_bracketed(service_account_dir: Path) -> None:
    config = load_incluster_config(
        service_account_dir=service_account_dir,
        environ={"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"},
    )

    assert config.server == "https://[fd00::1]:6443"


def test_in_cluster_without_service_env_is_an_error(service_account_dir: Path) -> None:
    with pytest.raises(KubeConfigError, match=r"^not running in a cluster: KUBERNETES_SERVICE"):
        load_incluster_config(service_account_dir=service_account_dir, environ={})


def test_in_cluster_without_token_is_an_error(service_account_dir: Path) -> None:
    os.unlink(service_account_dir / "token")

    with pytest.raises(KubeConfigError, match=r"^in-cluster config: no service-account token "):
        load_incluster_config(
            service_account_dir=service_account_dir,
            environ={"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"},
        )
