"""Connection settings: kubeconfig files and the in-cluster service-account environment.

Loading reads every referenced file once (certificates, keys) and keeps their PEM bytes in a
frozen :class:`KubeConfig`; only bearer tokens are re-read later, by :class:`TokenSource`,
because bound service-account tokens rotate. :func:`ssl_context` turns the PEM data into an
``ssl.SSLContext``. Exec and auth-provider plugins are not supported: the driver runs either
in-cluster or with a certificate/token kubeconfig.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dra_driver.cluster.kube.errors import KubeConfigError

if TYPE_CHECKING:
    import ssl

# PyYAML (kubeconfig files only) and ssl (the first request's TLS context) are imported where
# they are used: an in-cluster daemon never reads YAML, and none needs TLS before its sockets.

#: Where the kubelet mounts a pod's service-account token, CA bundle and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

#: client-go re-reads a token file after one minute; bound tokens are refreshed by the kubelet
#: at 80 % of their lifetime (>= 10 min), so a minute is always early enough.
TOKEN_REREAD_INTERVAL_S = 60.0


@dataclass(frozen=True, slots=True)
class KubeConfig:
    """Everything needed to reach and authenticate to one API server."""

    server: str
    """Base URL, e.g. ``https://127.0.0.1:6443`` (no trailing slash)."""
    ca_pem: bytes | None = None
    """CA bundle to verify the server with; None means the system trust store."""
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    """Name to verify the server certificate against instead of the URL's host."""
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str | None = None
    """A static bearer token."""
    token_file: Path | None = None
    """A bearer token file, re-read periodically (takes precedence over ``token``)."""
    namespace: str = "default"
    """The context's namespace (or the pod's own namespace in-cluster)."""
    source: str = ""
    """Where this came from, for error messages."""


def load_kubeconfig(path: str | os.PathLike[str], *, context: str | None = None) -> KubeConfig:
    """Load one context (default: ``current-context``) from a kubeconfig file."""
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeConfigError(f"kubeconfig {path}: cannot read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"kubeconfig {path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise KubeConfigError(f"kubeconfig {path}: not a kubeconfig (top level is not a map)")
    return _parse_kubeconfig(
        document, base_dir=path.resolve().parent, origin=str(path), context=context
    )


def _parse_kubeconfig(
    document: Mapping[str, Any], *, base_dir: Path, origin: str, context: str | None
) -> KubeConfig:
    """Resolve the context, its cluster and its user into a :class:`KubeConfig`."""
    context_name = context or document.get("current-context") or ""
    if not context_name:
        raise KubeConfigError(f"kubeconfig {origin}: no current-context and no context given")
    where = f"kubeconfig {origin}, context {context_name!r}"
    ctx = _named(document, "contexts", "context", context_name, where)
    cluster = _named(document, "clusters", "cluster", str(ctx.get("cluster") or ""), where)
    user_name = str(ctx.get("user") or "")
    user = _named(document, "users", "user", user_name, where) if user_name else {}

    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise KubeConfigError(f"{where}: cluster has no server")
    for unsupported in ("exec", "auth-provider", "username", "password"):
        if user.get(unsupported):
            raise KubeConfigError(
                f"{where}: user {user_name!r} uses {unsupported!r}, which this client does not "
                "support; use a client certificate or a token"
            )
    cert = _pem(user, "client-certificate", base_dir, where)
    key = _pem(user, "client-key", base_dir, where)
    if (cert is None) != (key is None):
        raise KubeConfigError(
            f"{where}: user {user_name!r} needs both a client certificate and key"
        )
    token_file = user.get("tokenFile")
    return KubeConfig(
        server=server,
        ca_pem=_pem(cluster, "certificate-authority", base_dir, where),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name") or None,
        client_cert_pem=cert,
        client_key_pem=key,
        token=user.get("token") or None,
        token_file=_resolve(base_dir, str(token_file)) if token_file else None,
        namespace=str(ctx.get("namespace") or "default"),
        source=where,
    )


def _named(
    document: Mapping[str, Any], section: str, key: str, name: str, where: str
) -> dict[str, Any]:
    """The entry ``name`` of a kubeconfig list such as ``clusters``."""
    for entry in document.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key) or {}
            if not isinstance(value, dict):
                raise KubeConfigError(f"{where}: {section} entry {name!r} is not a map")
            return value
    raise KubeConfigError(f"{where}: no entry {name!r} in {section}")


def _resolve(base_dir: Path, value: str) -> Path:
    """Paths in a kubeconfig are relative to the file that names them."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _pem(entry: Mapping[str, Any], field: str, base_dir: Path, where: str) -> bytes | None:
    """Read ``<field>-data`` (base64, preferred, as client-go does) or the file ``<field>``."""
    data = entry.get(f"{field}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KubeConfigError(f"{where}: {field}-data is not valid base64") from exc
    filename = entry.get(field)
    if not filename:
        return None
    path = _resolve(base_dir, str(filename))
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KubeConfigError(f"{where}: cannot read {field} {path}: {exc}") from exc


def load_incluster_config(
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str] | None = None,
) -> KubeConfig:
    """The pod's own service account, as client-go's ``rest.InClusterConfig`` builds it."""
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeConfigError(
            "not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT "
            "must be set (pass a kubeconfig instead)"
        )
    token_file = service_account_dir / "token"
    if not token_file.is_file():
        raise KubeConfigError(f"in-cluster config: no service-account token at {token_file}")
    ca_file = service_account_dir / "ca.crt"
    try:
        ca_pem = ca_file.read_bytes()
    except OSError as exc:
        raise KubeConfigError(f"in-cluster config: cannot read CA {ca_file}: {exc}") from exc
    try:
        namespace = (service_account_dir / "namespace").read_text().strip() or "default"
    except OSError:
        namespace = "default"
    return KubeConfig(
        server=f"https://{_url_host(host)}:{port}",
        ca_pem=ca_pem,
        token_file=token_file,
        namespace=namespace,
        source="in-cluster service account",
    )


def _url_host(host: str) -> str:
    """Bracket IPv6 literals for use in a URL."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[{host}]" if address.version == 6 else host


class TokenSource:
    """The current bearer token: static, or read from a file and re-read periodically.

    Thread-safe. A file that cannot be re-read keeps the last token (the kubelet writes token
    files atomically, so a failed read is transient); a file never read successfully raises.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        reread_after_s: float = TOKEN_REREAD_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token
        self._token_file = token_file
        self._reread_after_s = reread_after_s
        self._clock = clock
        self._read_at: float | None = None
        self._lock = threading.Lock()

    def current(self) -> str | None:
        """The token to send now, or None for no bearer authentication."""
        if self._token_file is None:
            return self._token
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self._reread_after_s:
                try:
                    self._token = self._token_file.read_text().strip()
                except OSError as exc:
                    if self._read_at is None:
                        raise KubeConfigError(
                            f"cannot read token file {self._token_file}: {exc}"
                        ) from exc
                self._read_at = now
            return self._token


def token_source(config: KubeConfig) -> TokenSource:
    """The token source a client built from ``config`` uses."""
    return TokenSource(token=config.token, token_file=config.token_file)


def ssl_context(config: KubeConfig) -> ssl.SSLContext:
    """A client TLS context: server verification per ``config`` and the client certificate.

    ``ssl`` loads a certificate chain only from files, so the PEM data is written to a private
    temporary directory (0700, files 0600), loaded, and removed again before returning.
    """
    import ssl

    # PROTOCOL_TLS_CLIENT verifies the chain and the host name by default.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if config.insecure_skip_tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca_pem is not None:
        # Like client-go: a configured CA replaces the system roots instead of adding to them.
        try:
            context.load_verify_locations(cadata=config.ca_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise KubeConfigError(f"{config.source}: invalid CA certificate data: {exc}") from exc
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if config.client_cert_pem is not None and config.client_key_pem is not None:
        directory = tempfile.mkdtemp(prefix="kube-client-")
        try:
            cert_file = Path(directory) / "client.crt"
            key_file = Path(directory) / "client.key"
            for path, data in (
                (cert_file, config.client_cert_pem),
                (key_file, config.client_key_pem),
            ):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise KubeConfigError(
                f"{config.source}: invalid client certificate or key: {exc}"
            ) from exc
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return context
