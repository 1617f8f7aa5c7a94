"""Our own small Kubernetes REST client (plain dicts, urllib3, no ``kubernetes`` import).

- :mod:`.config`: kubeconfig and in-cluster settings, TLS context, rotating tokens.
- :mod:`.client`: :class:`KubeClient` verbs and watch streams.
- :mod:`.reader`: :class:`ObjectReader`, GETs of single objects over kept-open connections
  without urllib3 (the daemon's claim reads).
- :mod:`.errors`: the exception hierarchy (``NotFound``, ``Conflict``, ...).
- :mod:`.paths`: REST paths of the resources we use.
"""

from dra_driver.cluster.kube.client import KubeClient, PatchType, WatchEvent, WatchStream
from dra_driver.cluster.kube.config import (
    KubeConfig,
    TokenSource,
    load_incluster_config,
    load_kubeconfig,
)
from dra_driver.cluster.kube.errors import (
    AlreadyExists,
    AnswerTooDeepError,
    ApiError,
    BadRequest,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    Invalid,
    KubeConfigError,
    KubeError,
    NotFound,
    ServerError,
    Unauthorized,
    is_unreachable,
)
from dra_driver.cluster.kube.reader import ObjectReader

__all__ = [
    "AlreadyExists",
    "AnswerTooDeepError",
    "ApiError",
    "BadRequest",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeClient",
    "KubeConfig",
    "KubeConfigError",
    "KubeError",
    "NotFound",
    "ObjectReader",
    "PatchType",
    "ServerError",
    "TokenSource",
    "Unauthorized",
    "WatchEvent",
    "WatchStream",
    "is_unreachable",
    "load_incluster_config",
    "load_kubeconfig",
]
