"""Orphan cleanup: unprepare prepared claims whose ResourceClaim is gone.

The kubelet unprepares a claim when its last pod on the node is gone. If that never reaches
us (the plugin was down, the kubelet lost its state, the node was cut off), the claim stays
in our checkpoint and its CUs, pipe id and vDCU slot stay taken for good. So at start (after
recovery) and every ``--orphan-interval`` seconds a sweep looks for them, and unprepares a
claim when:

- its ResourceClaim is gone (404): deleted, or
- the claim under its namespace and name has another UID: deleted and re-created.

A sweep costs one request per namespace that holds prepared claims, not one per claim (issue
18: an idle driver sends at most one request per node per minute apart from its watches):

1. one LIST of the namespace's ResourceClaims with ``resourceVersion=0``, which the API
   server answers from its watch cache (cheap: no etcd read; paged with ``limit`` and
   ``continue`` if the server pages it). Never a cluster-wide list, which would cost the
   server in proportion to the cluster, not to this node.
2. The prepared claims matched by name and UID against that list. One missing or with
   another UID is only a *candidate*: the cache may lag (a claim created a moment ago), so
   each candidate is confirmed with a GET, a quorum read, before anything is unprepared.

Why "claim gone" is enough and we do not also look for its pods: an allocated claim carries
the ``resource.kubernetes.io/delete-protection`` finalizer (resource-api.md §6.3), which the
resourceclaim controller removes only once ``status.reservedFor`` is empty, and it drops a
pod from ``reservedFor`` only when the pod is deleted or has terminated. A claim that is gone
therefore has no pod left that may run with it (tests/e2e/test_orphans.py shows a deleted
claim staying while its pod runs). The exceptions are someone stripping the finalizer by hand,
or force-deleting a pod whose node is unreachable; in both the cluster has already stopped
counting those CUs as used, so keeping them would only strand them.

Any other API error (unreachable, 403, 5xx) skips the whole round: we never unprepare on a
guess. The outage is logged once, and once more when a round succeeds again.

``group_by_namespace``, ``listed_uids`` and ``find_orphans`` are the pure decision;
``OrphanCleaner`` does the I/O on its own thread and unprepares through the same core call as
NodeUnprepareResources (under the data dir's flock).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dra_driver.cluster.kube import KubeClient, NotFound, paths
from dra_driver.errors import DriverError
from dra_driver.prepare.checkpoint import ClaimEntry
from dra_driver.prepare.model import ClaimRef, ClaimUID

logger = logging.getLogger(__name__)

#: Reads the checkpoint's claims now (``DcuPlugin.prepared_claims``).
PreparedClaims = Callable[[], Mapping[ClaimUID, ClaimEntry]]
#: Reads one ResourceClaim by namespace and name; raises ``NotFound`` or another
#: ``DriverError`` (the same shape as the kubelet plugin's claim getter).
ClaimGetter = Callable[[str, str], Mapping[str, Any]]
#: Reads the ResourceClaims of one namespace (their objects, maybe from the API server's
#: cache); raises a ``DriverError`` when it cannot.
ClaimLister = Callable[[str], Sequence[Mapping[str, Any]]]
#: Unprepares claims: ``Plugin.unprepare_claims``.
Unprepare = Callable[[Sequence[ClaimRef]], Mapping[ClaimUID, DriverError | None]]


@dataclass(frozen=True, slots=True)
class Orphan:
    """A prepared claim whose ResourceClaim is gone, and how we know."""

    ref: ClaimRef
    reason: str
    """``deleted``, or ``replaced by uid <new uid>``."""


def group_by_namespace(prepared: Iterable[ClaimRef]) -> dict[str, list[ClaimRef]]:
    """The prepared claims by namespace, in first-seen order. Pure."""
    groups: dict[str, list[ClaimRef]] = {}
    for ref in prepared:
        groups.setdefault(ref.namespace, []).append(ref)
    return groups


def listed_uids(
    prepared: Sequence[ClaimRef], listed: Iterable[Mapping[str, Any]]
) -> dict[ClaimUID, str | None]:
    """For each prepared claim, the UID ``listed`` has under its name (None: not there). Pure.

    ``listed`` are the ResourceClaims of the prepared claims' one namespace.
    """
    by_name = {
        str(metadata.get("name") or ""): uid_of(claim)
        for claim in listed
        if isinstance(metadata := claim.get("metadata"), Mapping)
    }
    return {ref.uid: by_name.get(ref.name) for ref in prepared}


def uid_of(claim: Mapping[str, Any]) -> str:
    """A ResourceClaim's UID ("" when it has none). Pure."""
    return str((claim.get("metadata") or {}).get("uid") or "")


def find_orphans(
    prepared: Sequence[ClaimRef], found_uids: Mapping[ClaimUID, str | None]
) -> list[Orphan]:
    """The prepared claims that are orphans, in ``prepared``'s order. Pure.

    ``found_uids`` maps each prepared claim's UID to the UID the API server has under its
    namespace/name now (None: 404). A claim missing from it was not looked up and is kept.
    """
    orphans = []
    for ref in prepared:
        if ref.uid not in found_uids:
            continue
        found = found_uids[ref.uid]
        if found is None:
            orphans.append(Orphan(ref, "deleted"))
        elif found != ref.uid:
            orphans.append(Orphan(ref, f"replaced by uid {found}"))
    return orphans


class OrphanCleaner:
    """Finds and unprepares orphaned claims at start and then every ``interval_s``.

    A round lists each namespace that holds prepared claims with ``list_claims`` (maybe from
    the API server's cache) and confirms each claim that list misses or has under another UID
    with ``get_claim`` (a quorum read) before unpreparing it.

    ``cleaned`` counts claims unprepared as orphans and ``failed_rounds`` rounds skipped for
    API errors (for metrics); ``on_cleaned`` is called with each orphan after its unprepare.
    """

    def __init__(
        self,
        *,
        prepared_claims: PreparedClaims,
        list_claims: ClaimLister,
        get_claim: ClaimGetter,
        unprepare: Unprepare,
        interval_s: float,
        on_cleaned: Callable[[Orphan], None] | None = None,
    ) -> None:
        self._prepared_claims = prepared_claims
        self._list_claims = list_claims
        self._get_claim = get_claim
        self._unprepare = unprepare
        self.interval_s = interval_s
        self._on_cleaned = on_cleaned
        self.cleaned = 0
        self.failed_rounds = 0
        self._outage = False
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphan-cleanup", daemon=True)

    def start(self) -> None:
        """Run a first round at once, then one every ``interval_s``, on a thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current round."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                # The thread must survive anything, or orphans would pile up silently.
                logger.exception("orphan cleanup round failed unexpectedly")
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def sweep_soon(self) -> None:
        """Run the next round now instead of at the end of the interval.

        For when the kubelet comes back: it may have dropped claims while we could not hear.
        """
        self._wake.set()

    def run_once(self) -> list[Orphan]:
        """One round; returns the orphans unprepared (none when the round was skipped)."""
        try:
            entries = self._prepared_claims()
        except DriverError as exc:
            self._note_outage(f"cannot read the checkpoint: {exc}")
            return []
        refs = [
            ClaimRef(uid=entry.uid, namespace=entry.namespace, name=entry.name)
            for entry in entries.values()
        ]
        found = self._confirmed_uids(refs)
        if found is None:
            return []
        if self._outage:
            self._outage = False
            logger.info("orphan cleanup: the API server answers again")
        orphans = find_orphans(refs, found)
        if not orphans:
            return []
        results = self._unprepare([orphan.ref for orphan in orphans])
        cleaned = []
        for orphan in orphans:
            error = results.get(orphan.ref.uid, DriverError("no result"))
            if error is not None:
                logger.error("cannot unprepare orphaned claim %s: %s", orphan.ref, error)
                continue
            self.cleaned += 1
            cleaned.append(orphan)
            logger.info(
                "unprepared orphaned claim %s: its ResourceClaim was %s", orphan.ref, orphan.reason
            )
            if self._on_cleaned is not None:
                self._on_cleaned(orphan)
        return cleaned

    def _confirmed_uids(self, refs: Sequence[ClaimRef]) -> dict[ClaimUID, str | None] | None:
        """The UID now under each orphan candidate's name (None: 404), confirmed by a GET.

        Claims the lists show unchanged are left out (``find_orphans`` keeps them). None: the
        round is skipped (an API error, or ``stop``).
        """
        found: dict[ClaimUID, str | None] = {}
        for namespace, in_namespace in group_by_namespace(refs).items():
            if self._stop.is_set():
                return None
            try:
                listed = self._list_claims(namespace)
            except DriverError as exc:
                self._note_outage(f"cannot list the claims of namespace {namespace}: {exc}")
                return None
            for candidate in find_orphans(in_namespace, listed_uids(in_namespace, listed)):
                if self._stop.is_set():
                    return None
                try:
                    claim = self._get_claim(candidate.ref.namespace, candidate.ref.name)
                except NotFound:
                    found[candidate.ref.uid] = None
                    continue
                except DriverError as exc:
                    self._note_outage(
                        f"cannot read claim {candidate.ref.namespace}/{candidate.ref.name}: {exc}"
                    )
                    return None
                found[candidate.ref.uid] = uid_of(claim)
        return found

    def _note_outage(self, why: str) -> None:
        """Skip the round; log the first failure of an outage only."""
        self.failed_rounds += 1
        if not self._outage:
            self._outage = True
            logger.warning("orphan cleanup skipped until the API server answers: %s", why)
        else:
            logger.debug("orphan cleanup skipped again: %s", why)


#: ResourceClaims per page of a sweep's LIST. A node's namespaces rarely hold more; the API
#: server may also answer a ``resourceVersion=0`` list from its cache in one page regardless.
LIST_PAGE_SIZE = 500


def claim_lister(client: KubeClient) -> ClaimLister:
    """List one namespace's ResourceClaims (``resource.k8s.io/v1``) from the API server's cache.

    ``resourceVersion=0`` lets the server answer from its watch cache instead of reading etcd;
    the answer may lag, which the sweep allows for by confirming candidates with a GET. Pages
    after the first follow the server's ``continue`` token (which carries the version).
    """

    def list_claims(namespace: str) -> list[Mapping[str, Any]]:
        items: list[Mapping[str, Any]] = []
        query: dict[str, str | None] = {"resourceVersion": "0", "limit": str(LIST_PAGE_SIZE)}
        while True:
            page = client.request("GET", paths.resource_claims(namespace), query=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query = {"limit": str(LIST_PAGE_SIZE), "continue": str(token)}

    return list_claims
