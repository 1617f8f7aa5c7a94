"""Orphan cleanup: the pure decision, and one round against a fake API and a fake unprepare."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from dra_driver import cli
from dra_driver.cluster.kube.errors import ConnectionFailed, NotFound
from dra_driver.cluster.orphans import (
    LIST_PAGE_SIZE,
    Orphan,
    OrphanCleaner,
    claim_lister,
    find_orphans,
    group_by_namespace,
    listed_uids,
)
from dra_driver.config import ConfigError, PluginConfig
from dra_driver.errors import DriverError
from dra_driver.prepare.checkpoint import ClaimEntry, ClaimState
from dra_driver.prepare.model import ClaimRef, ClaimUID
from dra_driver.testing.waiting import wait_for


def uid(n: int) -> ClaimUID:
    return ClaimUID(f"00000000-0000-4000-8000-{n:012d}")


def ref(n: int, namespace: str = "ns") -> ClaimRef:
    return ClaimRef(uid=uid(n), namespace=namespace, name=f"claim-{n}")


def listed(n: int, *, with_uid: str | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": f"claim-{n}", "uid": with_uid or uid(n)}}


def test_group_by_namespace_keeps_first_seen_order() -> None:
    refs = [ref(1, "b"), ref(2, "a"), ref(3, "b")]
    assert group_by_namespace(refs) == {"b": [ref(1, "b"), ref(3, "b")], "a": [ref(2, "a")]}
    assert list(group_by_namespace(refs)) == ["b", "a"]


def test_listed_uids_matches_by_name() -> None:
    claims = [listed(1), listed(2, with_uid=uid(22)), {"metadata": {"name": "other"}}, {}]
    assert listed_uids([ref(1), ref(2), ref(3)], claims) == {
        uid(1): uid(1),
        uid(2): uid(22),
        uid(3): None,
    }


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ({uid(1): uid(1)}, []),
        ({uid(1): None}, [Orphan(ref(1), "deleted")]),
        ({uid(1): uid(9)}, [Orphan(ref(1), f"replaced by uid {uid(9)}")]),
        ({}, []),
    ],
    ids=["still-there", "deleted", "recreated-with-another-uid", "not-looked-up-is-kept"],
)
def test_find_orphans(found: Mapping[ClaimUID, str | None], expected: list[Orphan]) -> None:
    assert find_orphans([ref(1)], found) == expected


def test_find_orphans_keeps_the_checkpoint_order() -> None:
    refs = [ref(3), ref(1), ref(2)]
    found: dict[ClaimUID, str | None] = {uid(3): None, uid(1): uid(1), uid(2): None}
    assert [o.ref for o in find_orphans(refs, found)] == [ref(3), ref(2)]


class FakeApi:
    """Claims by (namespace, name); ``down`` makes every read fail like an outage."""

    def __init__(self) -> None:
        self.claims: dict[tuple[str, str], dict[str, Any]] = {}
        self.down = False
        self.reads: list[tuple[str, str]] = []
        self.lists: list[str] = []
        #: Names the LIST leaves out, as a watch cache that lags behind would.
        self.stale: set[str] = set()

    def add(self, n: int, *, with_uid: str | None = None) -> None:
        self.claims[("ns", f"claim-{n}")] = listed(n, with_uid=with_uid)

    def list(self, namespace: str) -> list[Mapping[str, Any]]:
        self.lists.append(namespace)
        if self.down:
            raise ConnectionFailed("GET", "/claims", "connection refused")
        return [
            claim
            for (ns, name), claim in self.claims.items()
            if ns == namespace and name not in self.stale
        ]

    def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        self.reads.append((namespace, name))
        if self.down:
            raise ConnectionFailed("GET", f"/claims/{name}", "connection refused")
        try:
            return self.claims[(namespace, name)]
        except KeyError:
            raise NotFound(404, "NotFound", f"claim {name} not found") from None


class FakeCore:
    """A checkpoint of prepared claims and the unprepare call that empties it."""

    def __init__(self, *numbers: int) -> None:
        self.entries = {
            uid(n): ClaimEntry(
                uid=uid(n),
                namespace="ns",
                name=f"claim-{n}",
                state=ClaimState.PREPARE_COMPLETED,
                shares=(),
            )
            for n in numbers
        }
        self.calls: list[list[ClaimUID]] = []
        self.failing: set[ClaimUID] = set()

    def prepared_claims(self) -> dict[ClaimUID, ClaimEntry]:
        return dict(self.entries)

    def unprepare(self, refs: Sequence[ClaimRef]) -> dict[ClaimUID, DriverError | None]:
        self.calls.append([r.uid for r in refs])
        results: dict[ClaimUID, DriverError | None] = {}
        for r in refs:
            if r.uid in self.failing:
                results[r.uid] = DriverError("disk full")
            else:
                self.entries.pop(r.uid, None)
                results[r.uid] = None
        return results


def cleaner(core: FakeCore, api: FakeApi, seen: list[Orphan] | None = None) -> OrphanCleaner:
    return OrphanCleaner(
        prepared_claims=core.prepared_claims,
        list_claims=api.list,
        get_claim=api.get,
        unprepare=core.unprepare,
        interval_s=60,
        on_cleaned=None if seen is None else seen.append,
    )


def test_deleted_and_replaced_claims_are_unprepared_in_one_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core, api = FakeCore(1, 2, 3), FakeApi()
    api.add(1)
    api.add(3, with_uid=uid(33))
    seen: list[Orphan] = []
    caplog.set_level(logging.INFO, logger="dra_driver.cluster.orphans")

    cleaned = cleaner(core, api, seen).run_once()

    assert [o.ref for o in cleaned] == [ref(2), ref(3)]
    assert seen == cleaned
    assert core.calls == [[uid(2), uid(3)]]
    assert set(core.entries) == {uid(1)}
    assert api.lists == ["ns"]
    assert sorted(api.reads) == [("ns", "claim-2"), ("ns", "claim-3")]  # the candidates only
    lines = [r.getMessage() for r in caplog.records if "orphaned claim" in r.getMessage()]
    assert lines == [
        f"unprepared orphaned claim ns/claim-2 (uid {uid(2)}): its ResourceClaim was deleted",
        f"unprepared orphaned claim ns/claim-3 (uid {uid(3)}): its ResourceClaim was "
        f"replaced by uid {uid(33)}",
    ]


def test_counter_counts_only_claims_actually_unprepared() -> None:
    core, api = FakeCore(1, 2), FakeApi()
    core.failing.add(uid(1))
    clean = cleaner(core, api)
    assert [o.ref for o in clean.run_once()] == [ref(2)]
    assert clean.cleaned == 1
    core.failing.clear()
    assert [o.ref for o in clean.run_once()] == [ref(1)]
    assert clean.cleaned == 2
    assert clean.run_once() == []
    assert clean.cleaned == 2


def test_api_errors_skip_the_round_and_are_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    core, api = FakeCore(1, 2), FakeApi()
    api.down = True
    clean = cleaner(core, api)
    caplog.set_level(logging.DEBUG, logger="dra_driver.cluster.orphans")

    assert clean.run_once() == [] and clean.run_once() == []

    assert core.calls == []
    assert clean.failed_rounds == 2
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert (
        warnings[0]
        .getMessage()
        .startswith(
            "orphan cleanup skipped until the API server answers: "
            "cannot list the claims of namespace ns"
        )
    )
    api.down = False
    assert [o.ref for o in clean.run_once()] == [ref(1), ref(2)]
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_nothing_prepared_means_no_api_reads() -> None:
    core, api = FakeCore(), FakeApi()
    assert cleaner(core, api).run_once() == []
    assert api.reads == [] and api.lists == []


def test_an_idle_sweep_is_one_list_per_namespace_and_no_get() -> None:
    core, api = FakeCore(*range(1, 21)), FakeApi()
    for n in range(1, 21):
        api.add(n)
    clean = cleaner(core, api)
    assert clean.run_once() == [] and clean.run_once() == []
    assert api.lists == ["ns", "ns"]
    assert api.reads == []
    assert core.calls == []


def test_a_claim_the_cache_misses_is_confirmed_by_a_get_and_kept() -> None:
    core, api = FakeCore(1, 2), FakeApi()
    api.add(1)
    api.add(2)
    api.stale.add("claim-2")  # created after the cache's version: the LIST misses it
    assert cleaner(core, api).run_once() == []
    assert api.reads == [("ns", "claim-2")]
    assert core.calls == []
    assert set(core.entries) == {uid(1), uid(2)}


def test_a_failed_confirming_get_skips_the_round() -> None:
    core, api = FakeCore(1), FakeApi()

    def get_fails(namespace: str, name: str) -> Mapping[str, Any]:
        raise ConnectionFailed("GET", f"/claims/{name}", "connection reset")

    clean = OrphanCleaner(
        prepared_claims=core.prepared_claims,
        list_claims=api.list,  # the LIST answers (without claim-1), the GET does not
        get_claim=get_fails,
        unprepare=core.unprepare,
        interval_s=60,
    )
    assert clean.run_once() == []
    assert core.calls == [] and clean.failed_rounds == 1


def test_each_namespace_is_listed_once() -> None:
    core, api = FakeCore(), FakeApi()
    for n, namespace in ((1, "a"), (2, "b"), (3, "a")):
        core.entries[uid(n)] = ClaimEntry(
            uid=uid(n),
            namespace=namespace,
            name=f"claim-{n}",
            state=ClaimState.PREPARE_COMPLETED,
            shares=(),
        )
        api.claims[(namespace, f"claim-{n}")] = listed(n)
    api.claims.pop(("b", "claim-2"))
    cleaned = cleaner(core, api).run_once()
    assert sorted(api.lists) == ["a", "b"]
    assert api.reads == [("b", "claim-2")]
    assert [o.ref for o in cleaned] == [ref(2, "b")]


def test_the_thread_runs_a_round_at_start_and_stops() -> None:
    core, api = FakeCore(1), FakeApi()
    clean = cleaner(core, api)
    clean.start()
    try:
        wait_for(lambda: clean.cleaned == 1, timeout_s=5, description="the first round")
    finally:
        clean.stop()
    assert core.entries == {}


def test_sweep_soon_runs_the_next_round_before_the_interval_is_over() -> None:
    core, api = FakeCore(1), FakeApi()
    api.add(1)
    clean = cleaner(core, api)  # interval 60 s
    clean.start()
    try:
        wait_for(lambda: api.lists == ["ns"], timeout_s=5, description="the first round")
        clean.sweep_soon()
        wait_for(lambda: api.lists == ["ns", "ns"], timeout_s=5, description="a round at once")
    finally:
        clean.stop()
    assert set(core.entries) == {uid(1)} and clean.cleaned == 0


def test_orphan_interval_flag_env_twin_and_range(monkeypatch: pytest.MonkeyPatch) -> None:
    def interval(*extra: str) -> float:
        args = cli.build_parser().parse_args(["kubelet-plugin", "--node-name", "n", *extra])
        return float(args.orphan_interval)

    monkeypatch.delenv("ORPHAN_INTERVAL", raising=False)
    assert interval() == 120.0
    assert interval("--orphan-interval", "0") == 0.0
    monkeypatch.setenv("ORPHAN_INTERVAL", "2.5")
    assert interval() == 2.5
    with pytest.raises(ConfigError, match=r"^--orphan-interval -1 must be between 0 \(off\)"):
        PluginConfig(node_name="n", orphan_interval_s=-1).validate()


class PagingClient:
    """Answers the claim LIST in pages of two, records each request's path and query."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.requests: list[tuple[str, str, dict[str, str | None]]] = []

    def request(self, method: str, path: str, *, query: Mapping[str, str | None]) -> dict[str, Any]:
        self.requests.append((method, path, dict(query)))
        start = int(query.get("continue") or 0)
        page = self.names[start : start + 2]
        more = start + 2 < len(self.names)
        return {
            "items": [{"metadata": {"name": name}} for name in page],
            "metadata": {"continue": str(start + 2) if more else ""},
        }


def test_claim_lister_reads_the_cache_and_follows_continue() -> None:
    client = PagingClient(["a", "b", "c"])
    items = claim_lister(client)("ns")  # type: ignore[arg-type]
    assert [i["metadata"]["name"] for i in items] == ["a", "b", "c"]
    path = "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims"
    assert client.requests == [
        ("GET", path, {"resourceVersion": "0", "limit": str(LIST_PAGE_SIZE)}),
        ("GET", path, {"limit": str(LIST_PAGE_SIZE), "continue": "2"}),
    ]
