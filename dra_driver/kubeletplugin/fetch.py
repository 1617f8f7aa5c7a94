"""Reading the requested claims from the API server, before the serialization lock.

Owns ``fetch_claims``: one read per claim, concurrently when there are several (API calls are
slow, and the lock must not wait for them), each failure turned into that claim's error
(gone, too deeply nested, unreadable). Must not check or convert the claims (``claims`` does)
nor take the serialization lock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from dra_driver.cluster.kube.errors import AnswerTooDeepError, NotFound
from dra_driver.errors import ClaimError, DriverError
from dra_driver.kubeletplugin.outcomes import ClaimReadError
from dra_driver.prepare.model import ClaimRef

#: Reads one ResourceClaim as JSON by namespace and name; raises ``NotFound`` or another
#: ``DriverError`` (``KubeError``) when it cannot.
ClaimGetter = Callable[[str, str], Mapping[str, Any]]
#: Concurrent API reads of one prepare call: a pod rarely has more claims per driver, and a
#: small bound keeps one big pod from flooding the API server.
DEFAULT_FETCH_WORKERS = 4


def fetch_claims(
    get_claim: ClaimGetter, refs: Sequence[ClaimRef], pool: Executor
) -> list[Mapping[str, Any] | DriverError]:
    """Read every claim (concurrently on ``pool`` when several); a failure becomes its entry."""
    if len(refs) <= 1:
        return [_fetch_one(get_claim, ref) for ref in refs]
    return list(pool.map(lambda ref: _fetch_one(get_claim, ref), refs))


def _fetch_one(get_claim: ClaimGetter, ref: ClaimRef) -> Mapping[str, Any] | DriverError:
    try:
        return get_claim(ref.namespace, ref.name)
    except NotFound:
        return ClaimError(f"claim {ref}: not found in the API server (deleted?)")
    except (AnswerTooDeepError, RecursionError):
        # json.loads gives up near 1000 levels; the API server accepts opaque parameters
        # nested far deeper (10 KiB of "[" is 5000 levels). Only that claim fails, and
        # for good: reading it again gets the same answer.
        return ClaimError(
            f"claim {ref}: its JSON from the API server nests too deeply to decode (opaque "
            "parameters nested hundreds of levels deep?)"
        )
    except DriverError as exc:
        return ClaimReadError(f"claim {ref}: cannot read it from the API server: {exc}")
