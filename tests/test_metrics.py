"""The Prometheus metrics: names and help, what a call records, per-device gauges from state.

Metrics are read back the way Prometheus reads them: the text exposition of the registry,
parsed by prometheus_client's own parser.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dra_driver import cli
from dra_driver.cluster.kube.errors import (
    ApiError,
    ConnectionFailed,
    Forbidden,
    KubeError,
    ServerError,
    api_error,
)
from dra_driver.cluster.orphans import OrphanCleaner
from dra_driver.cluster.publisher import SlicePublisher
from dra_driver.cluster.slices import Sharing, build_pool
from dra_driver.config import ConfigError, PluginConfig, parse_listen_address
from dra_driver.errors import AllocationError, CheckpointCorruptError, ClaimConfigError
from dra_driver.kubeletplugin.plugin_server import KubeletPluginServer
from dra_driver.kubeletplugin.servicer import DraMethod, FailureReason, failure_reason
from dra_driver.metrics import (
    METRICS,
    DriverMetrics,
    MetricInfo,
    MetricsServer,
    MetricsServerError,
    PublishFailure,
    observe_checkpoint_writes,
    observe_publish_errors,
    publish_failure,
)
from dra_driver.node.devices import discover
from dra_driver.node.health import (
    DeviceHealth,
    HealthBoard,
    HealthMonitor,
    HealthStatus,
    UnhealthyReason,
)
from dra_driver.node.mock.fault import inject_fault
from dra_driver.prepare.plugin import DcuPlugin
from tests.kubeletplugin.test_servicer import (
    FakeClaims,
    FakePlugin,
    claim_json,
    prepare,
    uid,
    unprepare,
)
from tests.prepare.test_plugin import K100, NODE, Z100_A, Z100_B, Node, claim, share

MIB = 2**20
README = Path(__file__).resolve().parent.parent / "README.md"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(metrics: DriverMetrics) -> Samples:
    """Every sample of the registry, keyed by name and sorted labels."""
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(k[1])[label]: v for k, v in samples.items() if k[0] == name}


# --- the metric set -------------------------------------------------------------------------


def checked_node_metrics(mock_root: Path) -> DriverMetrics:
    """The metrics of a daemon on the mock node, after one health check, nothing prepared."""
    inventory = discover(mock_root)
    board = HealthBoard()
    HealthMonitor(inventory, board=board).check_once()
    return DriverMetrics(
        devices=inventory.devices,
        read_usage=lambda: {},
        read_health=lambda: board.snapshot().devices,
        read_orphans_cleaned=lambda: 0,
    )


def test_every_documented_metric_is_exported_and_nothing_else(mock_root: Path) -> None:
    metrics = checked_node_metrics(mock_root)
    text = metrics.exposition().decode()
    # The daemon turns prometheus_client's process-wide ``_created`` series off (e2e test).
    families = {
        f.name: f for f in text_string_to_metric_families(text) if not f.name.endswith("_created")
    }
    exported = {
        name + "_total" if family.type == "counter" else name for name, family in families.items()
    }
    assert exported == {m.name for m in METRICS}
    for info in METRICS:
        assert info.name.startswith("dcu_dra_")
        family = families[info.name.removesuffix("_total")]
        assert family.type == info.kind
        assert family.documentation == info.help
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        assert labels <= set(info.labels), info.name


def readme_row(info: MetricInfo) -> str:
    """The README's metrics table row of one metric, as the table is written."""
    labels = ", ".join(f"`{label}`" for label in info.labels) or "-"
    return f"| `{info.name}` | {info.kind} | {labels} | {info.help} |"


def test_every_metric_is_in_the_readme_table_and_nothing_else() -> None:
    """README's "### Metrics" table names exactly the metrics in ``METRICS``."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert "### Metrics" in lines, "README.md has no '### Metrics' section"
    start = lines.index("### Metrics") + 1
    end = next(
        (i for i in range(start, len(lines)) if lines[i].startswith(("# ", "## ", "### "))),
        len(lines),
    )
    documented = {
        name
        for line in lines[start:end]
        if line.startswith("|")
        for name in re.findall(r"`(dcu_dra_\w+)`", line.split("|")[1])
    }
    expected = {info.name for info in METRICS}
    assert documented == expected, (
        f"missing from README: {sorted(expected - documented)}; "
        f"not exported: {sorted(documented - expected)}; the rows from METRICS:\n"
        + "\n".join(readme_row(info) for info in METRICS)
    )


def test_labelled_series_exist_at_zero_before_anything_happens() -> None:
    samples = scrape(DriverMetrics())
    for method in ("prepare", "unprepare"):
        assert value(samples, f"dcu_dra_{method}_requests_total") == 0
        assert by_label(samples, f"dcu_dra_{method}_errors_total", "reason") == {
            r.value: 0 for r in FailureReason
        }
        assert value(samples, "dcu_dra_requests_in_flight", method=method) == 0
    assert by_label(samples, "dcu_dra_publish_errors_total", "reason") == {
        r.value: 0 for r in PublishFailure
    }
    # Orphan cleanup off (no reader) is the truth "none cleaned", not an absent counter.
    assert value(samples, "dcu_dra_orphans_cleaned_total") == 0


def test_registries_are_independent_of_each_other_and_of_the_global_one() -> None:
    from prometheus_client import REGISTRY

    first, second = DriverMetrics(), DriverMetrics()
    first.call_started(DraMethod.PREPARE)
    first.call_finished(DraMethod.PREPARE, duration_s=0.01, failures=())
    assert value(scrape(first), "dcu_dra_prepare_requests_total") == 1
    assert value(scrape(second), "dcu_dra_prepare_requests_total") == 0
    assert REGISTRY.get_sample_value("dcu_dra_prepare_requests_total") is None


def test_a_call_counts_once_with_its_duration_and_one_error_per_failed_claim() -> None:
    metrics = DriverMetrics()
    metrics.call_started(DraMethod.PREPARE)
    assert value(scrape(metrics), "dcu_dra_requests_in_flight", method="prepare") == 1
    metrics.call_finished(
        DraMethod.PREPARE,
        duration_s=0.007,
        failures=(FailureReason.CLAIM, FailureReason.CLAIM, FailureReason.ALLOCATION),
    )
    samples = scrape(metrics)
    assert value(samples, "dcu_dra_requests_in_flight", method="prepare") == 0
    assert value(samples, "dcu_dra_prepare_requests_total") == 1
    assert value(samples, "dcu_dra_prepare_errors_total", reason="claim") == 2
    assert value(samples, "dcu_dra_prepare_errors_total", reason="allocation") == 1
    assert value(samples, "dcu_dra_prepare_duration_seconds_count") == 1
    assert value(samples, "dcu_dra_prepare_duration_seconds_sum") == pytest.approx(0.007)
    # 7 ms lands in the 10 ms bucket, not in the 5 ms one.
    assert value(samples, "dcu_dra_prepare_duration_seconds_bucket", le="0.005") == 0
    assert value(samples, "dcu_dra_prepare_duration_seconds_bucket", le="0.01") == 1
    assert value(samples, "dcu_dra_unprepare_requests_total") == 0


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            ConnectionFailed("GET", "/api/v1/nodes/n", "connection refused"),
            PublishFailure.UNREACHABLE,
        ),
        (ServerError(503, "ServiceUnavailable", "etcd"), PublishFailure.UNREACHABLE),
        (api_error(409, {"reason": "Conflict"}), PublishFailure.CONFLICT),
        (Forbidden(403, "Forbidden", "no"), PublishFailure.REJECTED),
        (ApiError(422, "Invalid", "bad slice"), PublishFailure.REJECTED),
    ],
    ids=["no-answer", "5xx", "conflict", "forbidden", "invalid"],
)
def test_publish_failure_reasons(error: KubeError, reason: PublishFailure) -> None:
    assert publish_failure(error) is reason


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (AllocationError("no room"), FailureReason.ALLOCATION),
        (ClaimConfigError("bad config"), FailureReason.CLAIM),
        (CheckpointCorruptError("corrupt"), FailureReason.CHECKPOINT),
        (RuntimeError("bug"), FailureReason.INTERNAL),
    ],
    ids=["allocation", "config", "checkpoint", "other"],
)
def test_claim_failure_reasons(error: Exception, reason: FailureReason) -> None:
    assert failure_reason(error) is reason


# --- the servicer reports its calls ---------------------------------------------------------


@pytest.fixture
def metered(short_sock_dir: Path) -> Iterator[tuple[Any, DriverMetrics]]:
    """The real kubelet-facing servers with a fake Plugin, reporting to a DriverMetrics."""
    from tests.kubeletplugin.test_servicer import DRIVER, Served

    plugin, claims, metrics = FakePlugin(), FakeClaims(), DriverMetrics()
    server = KubeletPluginServer(
        driver_name=DRIVER,
        node_name="node-a",
        registrar_dir=short_sock_dir / "reg",
        data_dir=short_sock_dir / "data",
        plugin=plugin,
        get_claim=claims.get,
    )
    server.service.observer = metrics
    server.start()
    try:
        with (
            grpc.insecure_channel(f"unix:{server.dra_socket}") as dra,
            grpc.insecure_channel(f"unix:{server.registration_socket}") as registration,
        ):
            yield Served(server, plugin, claims, dra, registration, short_sock_dir), metrics
    finally:
        server.stop(1)


def test_servicer_counts_calls_and_classifies_failed_claims(metered: Any) -> None:
    served, metrics = metered
    for n in (1, 2, 3):
        served.claims.add(claim_json(n))
    served.claims.failing.add("c3")  # the API server answers 503 for it
    served.plugin.errors[uid(2)] = AllocationError("no room on the DCU")
    response = prepare(served, 1, 2, 3, 4)  # claim 4 does not exist
    assert [bool(response.claims[uid(n)].error) for n in (1, 2, 3, 4)] == [
        False,
        True,
        True,
        True,
    ]
    unprepare(served, 1)
    samples = scrape(metrics)
    assert value(samples, "dcu_dra_prepare_requests_total") == 1
    assert by_label(samples, "dcu_dra_prepare_errors_total", "reason") == {
        **{r.value: 0 for r in FailureReason},
        "allocation": 1,
        "api": 1,
        "claim": 1,
    }
    assert value(samples, "dcu_dra_prepare_duration_seconds_count") == 1
    assert value(samples, "dcu_dra_unprepare_requests_total") == 1
    assert value(samples, "dcu_dra_unprepare_duration_seconds_count") == 1
    assert sum(by_label(samples, "dcu_dra_unprepare_errors_total", "reason").values()) == 0


def test_empty_calls_of_the_liveness_probe_are_not_counted(metered: Any) -> None:
    served, metrics = metered
    prepare(served)
    unprepare(served)
    samples = scrape(metrics)
    assert value(samples, "dcu_dra_prepare_requests_total") == 0
    assert value(samples, "dcu_dra_prepare_duration_seconds_count") == 0
    assert value(samples, "dcu_dra_unprepare_requests_total") == 0


def test_a_failed_call_counts_every_claim_of_it(metered: Any) -> None:
    served, metrics = metered
    for n in (1, 2):
        served.claims.add(claim_json(n))
    served.plugin.raises = CheckpointCorruptError("checkpoint is corrupt")
    with pytest.raises(grpc.RpcError) as failed:
        prepare(served, 1, 2)
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    with pytest.raises(grpc.RpcError) as malformed:
        prepare(served, 1, uid="")
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    served.plugin.raises = RuntimeError("a bug")
    with pytest.raises(grpc.RpcError):
        unprepare(served, 1)
    samples = scrape(metrics)
    assert value(samples, "dcu_dra_prepare_requests_total") == 2
    assert value(samples, "dcu_dra_prepare_errors_total", reason="checkpoint") == 2
    assert value(samples, "dcu_dra_prepare_errors_total", reason="invalid_request") == 1
    assert value(samples, "dcu_dra_unprepare_errors_total", reason="internal") == 1
    assert value(samples, "dcu_dra_requests_in_flight", method="prepare") == 0


def test_in_flight_counts_calls_waiting_for_the_plugin(metered: Any) -> None:
    served, metrics = metered
    served.claims.add(claim_json(1))
    served.plugin.release = threading.Event()
    thread = threading.Thread(target=prepare, args=(served, 1))
    thread.start()
    try:
        assert served.plugin.entered.wait(10)
        assert value(scrape(metrics), "dcu_dra_requests_in_flight", method="prepare") == 1
    finally:
        served.plugin.release.set()
        thread.join(10)
    assert value(scrape(metrics), "dcu_dra_requests_in_flight", method="prepare") == 0


# --- per-device gauges from the plugin's state ----------------------------------------------


@pytest.fixture
def node(tmp_path: Path, mock_root: Path) -> Node:
    return Node(tmp_path, discover(mock_root))


def device_gauges(metrics: DriverMetrics) -> dict[str, dict[str, float]]:
    samples = scrape(metrics)
    return {
        name: by_label(samples, f"dcu_dra_{name}", "device")
        for name in (
            "device_allocated_cores",
            "device_allocated_memory_bytes",
            "device_shares",
            "device_capacity_cores",
            "device_capacity_memory_bytes",
            "device_capacity_vdevices",
        )
    }


def test_device_gauges_follow_prepare_and_unprepare(node: Node) -> None:
    plugin = node.plugin()
    metrics = DriverMetrics(devices=node.inventory.devices, read_usage=plugin.device_usage)
    idle = device_gauges(metrics)
    assert idle["device_allocated_cores"] == {Z100_A: 0, Z100_B: 0, K100: 0}
    assert idle["device_capacity_cores"] == {Z100_A: 60, Z100_B: 60, K100: 120}
    assert idle["device_capacity_memory_bytes"][K100] == 64 * 1024 * MIB
    assert idle["device_capacity_vdevices"] == {Z100_A: 4, Z100_B: 4, K100: 4}

    quarter = claim(share(Z100_A, cores=15, memory_mib=8188), share(K100, cores=30))
    other = claim(share(Z100_A, cores=20, memory_mib=1024))
    whole = claim(share(Z100_B, cores=None, memory_mib=None))
    admin = claim(share(K100, cores=120, memory_mib=65536, admin=True))
    for c in (quarter, other, whole, admin):
        node.prepare(plugin, c)
    held = device_gauges(metrics)
    assert held["device_allocated_cores"] == {Z100_A: 35, Z100_B: 60, K100: 30}
    assert held["device_allocated_memory_bytes"] == {
        Z100_A: (8188 + 1024) * MIB,
        # A whole DCU holds all of its memory, to the byte.
        Z100_B: node.inventory.by_name(Z100_B).memory_bytes,  # type: ignore[union-attr]
        K100: 4096 * MIB,
    }
    # Admin access takes no share of the card.
    assert held["device_shares"] == {Z100_A: 2, Z100_B: 1, K100: 1}

    plugin.unprepare_claims([c.ref for c in (quarter, other, whole, admin)])
    assert device_gauges(metrics)["device_allocated_cores"] == {Z100_A: 0, Z100_B: 0, K100: 0}
    assert device_gauges(metrics)["device_shares"] == {Z100_A: 0, Z100_B: 0, K100: 0}


def test_device_gauges_see_another_instance_s_claims(node: Node) -> None:
    """Computed at scrape time from the checkpoint: they can never drift from the real state."""
    reader, writer = node.plugin(), node.plugin()
    metrics = DriverMetrics(devices=node.inventory.devices, read_usage=reader.device_usage)
    node.prepare(writer, claim(share(K100, cores=40, memory_mib=2048)))
    assert device_gauges(metrics)["device_allocated_cores"][K100] == 40


def test_a_corrupt_checkpoint_leaves_usage_out_but_keeps_the_scrape(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = node.plugin()
    metrics = DriverMetrics(devices=node.inventory.devices, read_usage=plugin.device_usage)
    (node.data_dir / "checkpoint.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="dra_driver.metrics"):
        for _ in range(3):
            gauges = device_gauges(metrics)
            assert gauges["device_allocated_cores"] == {}
            assert gauges["device_capacity_cores"][K100] == 120
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "per-device metrics left out" in warnings[0].getMessage()
    (node.data_dir / "checkpoint.json").unlink()
    assert device_gauges(metrics)["device_allocated_cores"][K100] == 0


# --- device health from the health board ---------------------------------------------------


def health_gauges(metrics: DriverMetrics) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """``device_healthy`` by device, and ``device_unhealthy_reason`` by device and reason."""
    samples = scrape(metrics)
    reasons: dict[str, dict[str, float]] = {}
    for (name, labels), v in samples.items():
        if name == "dcu_dra_device_unhealthy_reason":
            label = dict(labels)
            reasons.setdefault(label["device"], {})[label["reason"]] = v
    return by_label(samples, "dcu_dra_device_healthy", "device"), reasons


NO_REASON = {r.value: 0.0 for r in UnhealthyReason}


def test_health_gauges_follow_the_board_through_a_lost_dcu_and_its_recovery(node: Node) -> None:
    """Read from the board at scrape time: what the kubelet is told is what is scraped."""
    board = HealthBoard()
    monitor = HealthMonitor(node.inventory, board=board)
    metrics = DriverMetrics(
        devices=node.inventory.devices, read_health=lambda: board.snapshot().devices
    )
    # Before the first check nothing is known: absent, not a guess either way.
    assert health_gauges(metrics) == ({}, {})

    monitor.check_once()
    assert health_gauges(metrics) == (
        {Z100_A: 1, Z100_B: 1, K100: 1},
        {Z100_A: NO_REASON, Z100_B: NO_REASON, K100: NO_REASON},
    )

    inject_fault(node.inventory.root, device=1, kind="lost")
    monitor.check_once()
    healthy, reasons = health_gauges(metrics)
    assert healthy == {Z100_A: 1, Z100_B: 0, K100: 1}
    # Lost has several symptoms; the gauge carries only the first, the taint's value.
    assert reasons[Z100_B] == {**NO_REASON, "NotResponding": 1}
    assert reasons[Z100_A] == reasons[K100] == NO_REASON

    inject_fault(node.inventory.root, device=1, kind="recover")
    monitor.check_once()
    assert health_gauges(metrics)[0] == {Z100_A: 1, Z100_B: 1, K100: 1}
    assert health_gauges(metrics)[1][Z100_B] == NO_REASON


@pytest.mark.parametrize(
    ("status", "reason", "healthy", "reasons"),
    [
        (HealthStatus.HEALTHY, None, 1, NO_REASON),
        (
            HealthStatus.UNHEALTHY,
            UnhealthyReason.KFD_MISSING,
            0,
            {**NO_REASON, "KfdMissing": 1},
        ),
        (HealthStatus.UNKNOWN, None, 0, NO_REASON),
    ],
    ids=["healthy", "unhealthy", "unknown"],
)
def test_health_gauges_per_status(
    status: HealthStatus,
    reason: UnhealthyReason | None,
    healthy: float,
    reasons: dict[str, float],
) -> None:
    """Unknown is not healthy, and has no reason: all reasons at 0 tell it from Unhealthy."""
    record = DeviceHealth(
        device=K100, status=status, reason=reason, message="", since=1.0, checked_at=2.0
    )
    metrics = DriverMetrics(read_health=lambda: (record,))
    assert health_gauges(metrics) == ({K100: healthy}, {K100: reasons})


# --- orphan cleanup, counted by the cleaner ---------------------------------------------------


def test_orphans_cleaned_counts_claims_the_real_cleaner_unprepared(node: Node) -> None:
    plugin = node.plugin()
    gone = [claim(share(Z100_A), name=f"gone-{n}") for n in (1, 2)]
    kept = claim(share(K100), name="kept")
    for c in (*gone, kept):
        node.prepare(plugin, c)
    claims = FakeClaims()
    claims.add({"metadata": {"namespace": "ns", "name": "kept", "uid": kept.ref.uid}})
    cleaner = OrphanCleaner(
        prepared_claims=plugin.prepared_claims,
        list_claims=lambda namespace: [
            o for (ns, _), o in claims.objects.items() if ns == namespace
        ],
        get_claim=claims.get,
        unprepare=plugin.unprepare_claims,
        interval_s=60,
    )
    metrics = DriverMetrics(
        devices=node.inventory.devices,
        read_usage=plugin.device_usage,
        read_orphans_cleaned=lambda: cleaner.cleaned,
    )
    assert value(scrape(metrics), "dcu_dra_orphans_cleaned_total") == 0
    assert len(cleaner.run_once()) == 2
    samples = scrape(metrics)
    assert value(samples, "dcu_dra_orphans_cleaned_total") == 2
    assert value(samples, "dcu_dra_device_allocated_cores", device=Z100_A) == 0
    assert value(samples, "dcu_dra_device_allocated_cores", device=K100) == 15
    # A round with nothing to clean leaves the counter where it is.
    assert cleaner.run_once() == []
    assert value(scrape(metrics), "dcu_dra_orphans_cleaned_total") == 2


# --- the core, observed from outside --------------------------------------------------------


def test_checkpoint_writes_of_the_real_plugin_are_timed(node: Node) -> None:
    plugin = node.plugin()
    metrics = DriverMetrics()
    observe_checkpoint_writes(plugin, metrics)
    c = claim(share(Z100_A))
    node.prepare(plugin, c)  # two writes: the plan, then "completed"
    node.prepare(plugin, c)  # already prepared: no write
    plugin.unprepare_claims([c.ref])
    samples = scrape(metrics)
    assert value(samples, "dcu_dra_checkpoint_write_duration_seconds_count") == 3
    assert value(samples, "dcu_dra_checkpoint_write_duration_seconds_sum") > 0


class FailingClient:
    """Stands in for the API client: every request fails with ``error``."""

    def __init__(self, error: KubeError) -> None:
        self.error = error

    def get(self, *_args: Any, **_kwargs: Any) -> Any:
        raise self.error

    def list(self, *_args: Any, **_kwargs: Any) -> Any:
        raise self.error


def test_failed_syncs_of_the_real_publisher_are_counted(node: Node) -> None:
    pool = build_pool(
        node.inventory, driver="dcu.hygon.com", node_name=NODE, sharing=Sharing.CONSUMABLE
    )
    client = FailingClient(ConnectionFailed("GET", "/api/v1/nodes/n", "connection refused"))
    publisher = SlicePublisher(client, pool)  # type: ignore[arg-type]
    metrics = DriverMetrics()
    observe_publish_errors(publisher, metrics)
    for error in (
        ConnectionFailed("GET", "/api/v1/nodes/n", "refused"),
        Forbidden(403, "Forbidden", "RBAC"),
    ):
        client.error = error
        with pytest.raises(KubeError):
            publisher.sync_once()
    samples = scrape(metrics)
    assert by_label(samples, "dcu_dra_publish_errors_total", "reason") == {
        "unreachable": 1,
        "conflict": 0,
        "rejected": 1,
    }


def test_observing_a_method_that_is_not_there_fails_loudly() -> None:
    with pytest.raises(TypeError, match=r"^object has no method _save\(\) to observe$"):
        observe_checkpoint_writes(object(), DriverMetrics())
    assert hasattr(DcuPlugin, "_save") and hasattr(SlicePublisher, "sync_once")


# --- the HTTP endpoint ----------------------------------------------------------------------


def test_metrics_are_served_over_http(node: Node) -> None:
    metrics = DriverMetrics(devices=node.inventory.devices)
    server = MetricsServer(metrics, host="127.0.0.1", port=0)
    server.start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            body = r.read().decode()
    finally:
        server.stop()
    assert f'dcu_dra_device_capacity_cores{{device="{K100}"}} 120.0' in body
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=2)


def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = MetricsServer(DriverMetrics(), host="127.0.0.1", port=port)
        with pytest.raises(
            MetricsServerError,
            match=rf"^cannot serve metrics on 127\.0\.0\.1:{port}: Address already in use; "
            r"choose another --metrics-addr$",
        ):
            server.start()


# --- the flag -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":8080", ("0.0.0.0", 8080)),
        ("127.0.0.1:9400", ("127.0.0.1", 9400)),
        ("[::]:8080", ("::", 8080)),
        ("[fd00::1]:1", ("fd00::1", 1)),
        ("metrics.local:65535", ("metrics.local", 65535)),
    ],
    ids=["any", "ipv4", "ipv6-any", "ipv6", "name"],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text, flag="--metrics-addr") == expected


@pytest.mark.parametrize(
    "text",
    ["8080", "host:", "host:http", ":0", ":65536", "::1:8080", "[::1]"],
    ids=["no-colon", "no-port", "named-port", "zero", "too-big", "bare-ipv6", "no-port-v6"],
)
def test_bad_listen_addresses_name_the_flag(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--metrics-addr {re.escape(repr(text))} is not "):
        parse_listen_address(text, flag="--metrics-addr")


def test_metrics_addr_flag_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["kubelet-plugin", "--node-name", "n"]
    assert cli.build_parser().parse_args(base).metrics_addr == ""
    args = cli.build_parser().parse_args([*base, "--metrics-addr", ":9400"])
    assert args.metrics_addr == ":9400"
    monkeypatch.setenv("METRICS_ADDR", "127.0.0.1:9500")
    assert cli.build_parser().parse_args(base).metrics_addr == "127.0.0.1:9500"
    PluginConfig(node_name="n", metrics_addr=":9400", healthcheck_port=51515).validate()
    with pytest.raises(ConfigError, match=r"^--metrics-addr :51515 and --healthcheck-port 51515 "):
        PluginConfig(node_name="n", metrics_addr=":51515", healthcheck_port=51515).validate()


def test_a_bad_metrics_addr_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["kubelet-plugin", "--node-name", "n", "--metrics-addr", "9400"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith(
        "dcu-dra kubelet-plugin: error: --metrics-addr '9400' is not HOST:PORT"
    )


# --- the daemon's wiring --------------------------------------------------------------------


def test_the_daemon_wires_both_endpoints_and_undoes_them_when_one_cannot_listen(
    node: Node, short_sock_dir: Path
) -> None:
    from dra_driver.daemon import start_endpoints
    from dra_driver.kubeletplugin.liveness import LivenessServerError

    plugin = node.plugin()
    servers = KubeletPluginServer(
        driver_name="dcu.hygon.com",
        node_name=NODE,
        registrar_dir=short_sock_dir / "reg",
        data_dir=short_sock_dir / "data",
        plugin=plugin,
        get_claim=FakeClaims().get,
    )
    pool = build_pool(
        node.inventory, driver="dcu.hygon.com", node_name=NODE, sharing=Sharing.CONSUMABLE
    )
    publisher = SlicePublisher(FailingClient(Forbidden(403, "Forbidden", "RBAC")), pool)  # type: ignore[arg-type]
    board = HealthBoard()
    cleaner = OrphanCleaner(
        prepared_claims=plugin.prepared_claims,
        list_claims=lambda namespace: [],
        get_claim=FakeClaims().get,  # every claim is gone
        unprepare=plugin.unprepare_claims,
        interval_s=60,
    )
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        metrics_port = free.getsockname()[1]
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        config = PluginConfig(
            node_name=NODE, metrics_addr=f"127.0.0.1:{metrics_port}", healthcheck_port=busy_port
        )
        with pytest.raises(
            LivenessServerError, match=rf"^cannot serve the liveness endpoint on \[::\]:{busy_port}"
        ):
            start_endpoints(
                config,
                plugin=plugin,
                inventory=node.inventory,
                servers=servers,
                publisher=publisher,
                health=board,
                cleaner=cleaner,
                stopping=threading.Event(),
            )
    # The metrics server that did start was stopped again; the core was still instrumented.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", metrics_port), timeout=2).close()
    metrics = servers.service.observer
    assert isinstance(metrics, DriverMetrics)
    with pytest.raises(KubeError):
        publisher.sync_once()
    assert value(scrape(metrics), "dcu_dra_publish_errors_total", reason="rejected") == 1
    node.prepare(plugin, claim(share(K100, cores=30)))
    samples = scrape(metrics)
    assert value(samples, "dcu_dra_checkpoint_write_duration_seconds_count") == 2
    assert value(samples, "dcu_dra_device_allocated_cores", device=K100) == 30
    # Health and orphans are read from the board and the cleaner, started after the endpoints.
    assert by_label(samples, "dcu_dra_device_healthy", "device") == {}
    assert value(samples, "dcu_dra_orphans_cleaned_total") == 0
    HealthMonitor(node.inventory, board=board).check_once()
    assert len(cleaner.run_once()) == 1
    samples = scrape(metrics)
    assert by_label(samples, "dcu_dra_device_healthy", "device") == {Z100_A: 1, Z100_B: 1, K100: 1}
    assert value(samples, "dcu_dra_orphans_cleaned_total") == 1
    assert value(samples, "dcu_dra_device_allocated_cores", device=K100) == 0
