"""Claim status entries: building them, merging them with other drivers', and writing them.

The API server is faked only for the read-modify-write loop (conflicts, 404, replaced claims);
tests/e2e/test_claim_status.py checks that the real API server accepts what we write.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest

from dra_driver import cli
from dra_driver.cluster.claimstatus import (
    RETRY_FIRST_S,
    ClaimStatusReporter,
    StatusReportingPlugin,
    build_device_statuses,
    merge_devices,
)
from dra_driver.cluster.kube import (
    Conflict,
    ConnectionFailed,
    Forbidden,
    KubeError,
    NotFound,
    ServerError,
    paths,
)
from dra_driver.errors import DriverError
from dra_driver.node.devices import DeviceName
from dra_driver.prepare.checkpoint import ClaimEntry, ClaimState, PreparedShare
from dra_driver.prepare.model import Claim, ClaimRef, ClaimUID, PrepareResult
from dra_driver.testing.waiting import wait_for

DRIVER = "dcu.hygon.com"
NODE = "node-a"
UID = ClaimUID("00000000-0000-4000-8000-000000000001")
SHARE = "11111111-0000-4000-8000-000000000001"
REF = ClaimRef(uid=UID, namespace="ns", name="c")
NOW = dt.datetime(2026, 8, 1, 12, 0, 0, tzinfo=dt.UTC)
VDEV_DIR = Path("/var/lib/kubelet/plugins/dcu.hygon.com/vdev") / UID
PCI = {"dcu-0000-3b-00-0": "0000:3b:00.0", "dcu-0000-af-00-0": "0000:af:00.0"}

VDCU = PreparedShare(
    request="dcu",
    pool=NODE,
    device=DeviceName("dcu-0000-3b-00-0"),
    share_id=SHARE,
    cdi_id=f"k8s.dcu.hygon.com/dcu={UID}-dcu-0000-3b-00-0-{SHARE}",
    whole_device=False,
    cores=12,
    memory_mib=4096,
    cu_mask=(0b1111_1111_1100_0000_1111, 0),
    pipe_id=2,
    vdev_id=0,
)
WHOLE = PreparedShare(
    request="big",
    pool=NODE,
    device=DeviceName("dcu-0000-af-00-0"),
    share_id=None,
    cdi_id=f"k8s.dcu.hygon.com/dcu={UID}-dcu-0000-af-00-0",
    whole_device=True,
    cores=120,
    memory_mib=65536,
)


def entry(*shares: PreparedShare, state: ClaimState = ClaimState.PREPARE_COMPLETED) -> ClaimEntry:
    return ClaimEntry(uid=UID, namespace="ns", name="c", state=state, shares=shares)


def statuses(*shares: PreparedShare, now: dt.datetime = NOW) -> list[dict[str, Any]]:
    return build_device_statuses(
        entry(*shares), driver=DRIVER, vdev_dir=VDEV_DIR, pci_bus_ids=PCI, now=now
    )


def test_a_vdcu_share_shows_its_cus_mask_pipe_memory_and_vdev_file() -> None:
    (status,) = statuses(VDCU)
    assert status == {
        "driver": DRIVER,
        "pool": NODE,
        "device": "dcu-0000-3b-00-0",
        "shareID": SHARE,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Prepared",
                "message": "vDCU on dcu-0000-3b-00-0 prepared: 12 CUs, 4096 MiB",
                "lastTransitionTime": "2026-08-01T12:00:00Z",
            }
        ],
        "data": {
            "request": "dcu",
            "cores": 12,
            "memoryMiB": 4096,
            "wholeDevice": False,
            "cdiDevice": VDCU.cdi_id,
            "pciBusID": "0000:3b:00.0",
            "cuMask": ["0x00000000000ffc0f", "0x0000000000000000"],
            "cus": "0-3,10-19",
            "pipeId": 2,
            "vdevFile": f"{VDEV_DIR}/vdev0.conf",
        },
    }


def test_a_whole_device_has_no_share_id_and_no_vdev_fields() -> None:
    (status,) = statuses(WHOLE)
    assert "shareID" not in status
    assert status["data"] == {
        "request": "big",
        "cores": 120,
        "memoryMiB": 65536,
        "wholeDevice": True,
        "cdiDevice": WHOLE.cdi_id,
        "pciBusID": "0000:af:00.0",
    }
    assert status["conditions"][0]["message"] == "whole DCU dcu-0000-af-00-0 prepared"


OTHER = {"driver": "nic.example.com", "pool": NODE, "device": "eth0", "data": {"x": 1}}
OURS_ELSEWHERE = {"driver": DRIVER, "pool": "node-b", "device": "dcu-0000-3b-00-0"}


def test_merge_replaces_only_our_entries_in_our_pool() -> None:
    stale = {"driver": DRIVER, "pool": NODE, "device": "dcu-0000-5e-00-0"}
    ours = statuses(VDCU)
    merged = merge_devices([OTHER, stale, OURS_ELSEWHERE], ours, driver=DRIVER, pool=NODE)
    assert merged == [OTHER, OURS_ELSEWHERE, *ours]


def test_merge_with_nothing_of_ours_removes_our_entries() -> None:
    merged = merge_devices([OTHER, *statuses(VDCU)], [], driver=DRIVER, pool=NODE)
    assert merged == [OTHER]


def test_merge_keeps_the_transition_time_of_an_unchanged_entry() -> None:
    before = statuses(VDCU, now=NOW)
    later = statuses(VDCU, now=NOW + dt.timedelta(hours=1))
    assert merge_devices(before, later, driver=DRIVER, pool=NODE) == before


class FakeClaimApi:
    """One claim behind GET and PUT .../status, with resourceVersion checks."""

    def __init__(self, claim: dict[str, Any] | None) -> None:
        self.claim = claim
        self.conflicts = 0
        self.get_errors: list[KubeError] = []
        """Raised by the next GETs, one each (an outage, a refusal)."""
        self.puts: list[dict[str, Any]] = []
        self.gets = 0
        self.path = paths.resource_claims("ns", "c")

    def get(self, path: str) -> dict[str, Any]:
        assert path == self.path
        self.gets += 1
        if self.get_errors:
            raise self.get_errors.pop(0)
        if self.claim is None:
            raise NotFound(404, "NotFound", "not found")
        return copy.deepcopy(self.claim)

    def replace(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert path == self.path + "/status"
        assert self.claim is not None
        if self.conflicts:
            self.conflicts -= 1
            self.claim["metadata"]["resourceVersion"] = str(
                int(self.claim["metadata"]["resourceVersion"]) + 1
            )
            raise Conflict(409, "Conflict", "the object has been modified")
        if body["metadata"]["resourceVersion"] != self.claim["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "stale resourceVersion")
        self.puts.append(copy.deepcopy(body))
        self.claim = copy.deepcopy(body)
        self.claim["metadata"]["resourceVersion"] = str(
            int(body["metadata"]["resourceVersion"]) + 1
        )
        return copy.deepcopy(self.claim)


def claim(devices: list[dict[str, Any]] | None = None, *, claim_uid: str = UID) -> dict[str, Any]:
    status: dict[str, Any] = {"allocation": {"devices": {"results": []}}}
    if devices is not None:
        status["devices"] = devices
    return {"metadata": {"uid": claim_uid, "resourceVersion": "7"}, "status": status}


def reporter(api: FakeClaimApi, checkpoint: dict[ClaimUID, ClaimEntry]) -> ClaimStatusReporter:
    return ClaimStatusReporter(
        client=api,  # type: ignore[arg-type]
        driver=DRIVER,
        pool=NODE,
        prepared_claims=lambda: checkpoint,
        vdev_dir=lambda uid: VDEV_DIR,
        pci_bus_ids=PCI,
        clock=lambda: NOW,
    )


def test_reconcile_writes_our_entries_beside_other_drivers() -> None:
    api = FakeClaimApi(claim([OTHER]))
    assert reporter(api, {UID: entry(VDCU, WHOLE)}).reconcile(REF) is True
    assert api.claim is not None
    assert api.claim["status"]["devices"] == [OTHER, *statuses(VDCU, WHOLE)]
    # Again: nothing changed, nothing written.
    assert reporter(api, {UID: entry(VDCU, WHOLE)}).reconcile(REF) is False
    assert len(api.puts) == 1


def test_reconcile_of_an_unprepared_claim_removes_our_entries() -> None:
    api = FakeClaimApi(claim([OTHER, *statuses(VDCU)]))
    assert reporter(api, {}).reconcile(REF) is True
    assert api.claim is not None and api.claim["status"]["devices"] == [OTHER]
    api = FakeClaimApi(claim(statuses(VDCU)))
    assert reporter(api, {}).reconcile(REF) is True
    assert api.claim is not None and "devices" not in api.claim["status"]


def test_reconcile_of_an_interrupted_prepare_writes_nothing() -> None:
    api = FakeClaimApi(claim())
    started = entry(VDCU, state=ClaimState.PREPARE_STARTED)
    assert reporter(api, {UID: started}).reconcile(REF) is False
    assert api.puts == []


def test_reconcile_retries_conflicts_with_a_fresh_read() -> None:
    api = FakeClaimApi(claim())
    api.conflicts = 2
    assert reporter(api, {UID: entry(VDCU)}).reconcile(REF) is True
    assert len(api.puts) == 1


def test_the_claim_the_prepare_read_saves_the_status_writes_own_read() -> None:
    """make scale counted two claim GETs per prepare: the prepare's and the status write's."""
    api = FakeClaimApi(claim([OTHER]))
    status = reporter(api, {UID: entry(VDCU)})
    read_by_prepare = api.get(api.path)
    status.remember(read_by_prepare)
    assert status.reconcile(REF) is True
    assert (api.gets, len(api.puts)) == (1, 1)
    assert read_by_prepare == claim([OTHER])  # the prepare's object is not changed
    # Used once: the next reconcile reads the claim again.
    assert status.reconcile(REF) is False
    assert api.gets == 2


def test_a_stale_claim_from_the_prepare_costs_a_conflict_and_a_fresh_read() -> None:
    api = FakeClaimApi(claim())
    status = reporter(api, {UID: entry(VDCU)})
    status.remember(api.get(api.path))
    assert api.claim is not None
    api.claim["metadata"]["resourceVersion"] = "8"  # someone wrote the claim since
    assert status.reconcile(REF) is True
    assert (api.gets, len(api.puts)) == (2, 1)


def test_a_claim_from_the_prepare_never_decides_that_nothing_needs_writing() -> None:
    api = FakeClaimApi(claim(statuses(VDCU)))
    status = reporter(api, {})
    status.remember(claim())  # an older copy, without the entries the claim has now
    assert status.reconcile(REF) is True
    assert api.claim is not None and "devices" not in api.claim["status"]
    assert api.gets == 1


def test_an_old_or_foreign_claim_from_the_prepare_is_not_used() -> None:
    api = FakeClaimApi(claim())
    status = reporter(api, {UID: entry(VDCU)})
    clock = [100.0]
    status._monotonic = lambda: clock[0]
    status.remember(claim())
    status.remember({"metadata": {}})  # no UID: nothing to key it by
    clock[0] += 46.0
    assert status.reconcile(REF) is True
    assert api.gets == 1


def test_reconcile_gives_up_after_persistent_conflicts() -> None:
    api = FakeClaimApi(claim())
    api.conflicts = 100
    with pytest.raises(KubeError, match=r"^claim ns/c \(uid .*\): status still conflicting"):
        reporter(api, {UID: entry(VDCU)}).reconcile(REF)


@pytest.mark.parametrize(
    "stored",
    [None, claim(claim_uid="00000000-0000-4000-8000-000000000099")],
    ids=["deleted", "replaced-by-a-new-claim"],
)
def test_reconcile_leaves_a_claim_that_is_not_ours_alone(stored: dict[str, Any] | None) -> None:
    api = FakeClaimApi(stored)
    assert reporter(api, {UID: entry(VDCU)}).reconcile(REF) is False
    assert api.puts == []


class Core:
    def prepare_claims(self, claims: Any) -> dict[ClaimUID, PrepareResult | DriverError]:
        return {
            claims[0].ref.uid: PrepareResult(devices=()),
            claims[1].ref.uid: DriverError("no"),
        }

    def unprepare_claims(self, refs: Any) -> dict[ClaimUID, DriverError | None]:
        return {refs[0].uid: None, refs[1].uid: DriverError("no")}


class RecordingReporter:
    def __init__(self) -> None:
        self.requested: list[ClaimRef] = []

    def request(self, ref: ClaimRef) -> None:
        self.requested.append(ref)


def test_the_wrapper_asks_for_status_of_successful_calls_only() -> None:
    other = ClaimRef(uid=ClaimUID("00000000-0000-4000-8000-000000000002"), namespace="n", name="d")
    recorder = RecordingReporter()
    plugin = StatusReportingPlugin(Core(), recorder)  # type: ignore[arg-type]
    plugin.prepare_claims([Claim(ref=REF, shares=()), Claim(ref=other, shares=())])
    plugin.unprepare_claims([REF, other])
    assert recorder.requested == [REF, REF]


def test_failures_are_counted_and_never_raised() -> None:
    api = FakeClaimApi(claim())
    api.conflicts = 100
    failed: list[ClaimRef] = []
    writer = reporter(api, {UID: entry(VDCU)})
    writer._on_failure = failed.append
    writer.start()
    try:
        writer.request(REF)
        assert writer.wait_idle(10)
    finally:
        writer.stop()
    assert (writer.failures, writer.writes, failed) == (1, 0, [REF])


def test_an_unreachable_api_server_is_logged_once_not_once_per_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    api = FakeClaimApi(claim())
    writer = reporter(api, {UID: entry(VDCU)})
    caplog.set_level(logging.DEBUG, logger="dra_driver.cluster.claimstatus")
    api.get_errors = [
        ConnectionFailed("GET", api.path, "refused"),
        ServerError(503, "ServiceUnavailable", "etcd is not reachable"),
        ConnectionFailed("GET", api.path, "refused"),
        Forbidden(403, "Forbidden", "RBAC"),
    ]
    for _ in range(5):
        writer._reconcile_logged(REF)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert warnings[0].startswith("cannot write the status of claim ns/c (uid ")
    assert warnings[0].endswith(
        "the API server is unreachable, further writes that fail for that reason are not "
        "logged until it answers"
    )
    assert "403 Forbidden: RBAC" in warnings[1]
    assert len([r for r in caplog.records if "either" in r.getMessage()]) == 2
    assert [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()] == [
        "claim status: the API server answers again; writing status again"
    ]
    assert (writer.failures, writer.writes) == (4, 1)


def test_a_write_the_api_server_did_not_answer_is_retried_with_backoff() -> None:
    """Unreachable: retried after 1 s, then 2 s, ... until it lands; a refusal is not."""
    api = FakeClaimApi(claim())
    writer = reporter(api, {UID: entry(VDCU)})
    now = [100.0]
    writer._monotonic = lambda: now[0]
    api.get_errors = [
        ConnectionFailed("GET", api.path, "refused"),
        ServerError(503, "ServiceUnavailable", "etcd is not reachable"),
    ]
    writer._reconcile_logged(REF)
    assert writer.retries_scheduled() == 1
    with writer._cond:
        writer._queue_due_retries()
    assert not writer._pending  # not due before its second
    now[0] += RETRY_FIRST_S
    with writer._cond:
        writer._queue_due_retries()
    assert list(writer._pending) == [UID]
    writer._pending.clear()
    writer._reconcile_logged(REF)  # the 503: backs off further
    ((_, due, delay),) = writer._retries.values()
    assert (delay, due) == (2 * RETRY_FIRST_S, now[0] + 2 * RETRY_FIRST_S)
    now[0] = due
    with writer._cond:
        writer._queue_due_retries()
    writer._pending.clear()
    writer._reconcile_logged(REF)  # the API server is back
    assert (writer.writes, writer.retries_scheduled()) == (1, 0)

    refusing = FakeClaimApi(claim())
    refusing.get_errors = [Forbidden(403, "Forbidden", "RBAC")]
    refused = reporter(refusing, {UID: entry(VDCU)})
    refused._reconcile_logged(REF)
    assert (refused.failures, refused.retries_scheduled()) == (1, 0)


def test_the_worker_retries_on_its_own_once_the_api_server_answers() -> None:
    api = FakeClaimApi(claim())
    writer = reporter(api, {UID: entry(VDCU)})
    api.get_errors = [ConnectionFailed("GET", api.path, "refused")]
    writer.start()
    try:
        writer.request(REF)
        wait_for(lambda: writer.writes == 1, timeout_s=RETRY_FIRST_S + 10, description="retry")
    finally:
        writer.stop()
    assert (writer.failures, writer.writes, writer.retries_scheduled()) == (1, 1, 0)


def test_claim_status_flag_is_off_by_default_with_an_env_twin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def enabled(*extra: str) -> bool:
        args = cli.build_parser().parse_args(["kubelet-plugin", "--node-name", "n", *extra])
        return bool(args.claim_status)

    monkeypatch.delenv("CLAIM_STATUS", raising=False)
    assert enabled() is False
    assert enabled("--claim-status") is True
    monkeypatch.setenv("CLAIM_STATUS", "1")
    assert enabled() is True
    assert enabled("--no-claim-status") is False
