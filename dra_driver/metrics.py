"""Prometheus metrics of the node daemon: one registry, every name under ``dcu_dra_``.

Owns the metric definitions, the per-device collector and the ``/metrics`` HTTP endpoint. It
decides nothing and never sprinkles the core: the servicer reports its calls (``DriverMetrics``
is its ``CallObserver``), checkpoint writes and publish failures are observed by wrapping one
method of the objects the daemon built (``observe_checkpoint_writes``,
``observe_publish_errors``), and everything the daemon already keeps is read at scrape time:
the per-device gauges from the plugin's state and the health board, the orphan count from the
cleaner's own counter. So they can never drift from what is really prepared or checked.

The registry is our own, never prometheus_client's global one: tests build as many as they
like, and nothing another library registers leaks into our endpoint.

The daemon imports this module only when ``--metrics-addr`` is set.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dra_driver.cluster.kube.errors import ApiError, ConnectionFailed, KubeError
from dra_driver.errors import DriverError
from dra_driver.kubeletplugin.servicer import DraMethod, FailureReason
from dra_driver.node.devices import DcuDevice, DeviceName
from dra_driver.node.health import HealthStatus, UnhealthyReason

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from dra_driver.node.health import DeviceHealth
    from dra_driver.prepare.plugin import DeviceUsage

logger = logging.getLogger(__name__)

PREFIX = "dcu_dra"
#: Prepare p50 is ~10 ms and p99 ~33 ms on a 2-core machine (README), unprepare ~3 ms; an API
#: server under load or a contended lock stretches that to seconds, and the kubelet gives up at
#: 45 s. Fine buckets where calls usually land, coarse ones up to the kubelet's limit.
CALL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 45)
#: A checkpoint write is a small file plus two fsyncs: sub-millisecond on tmpfs, milliseconds
#: on SSDs, up to a second on a busy disk.
CHECKPOINT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class PublishFailure(StrEnum):
    """Reasons of ``dcu_dra_publish_errors_total`` (a small fixed set)."""

    UNREACHABLE = "unreachable"
    """No answer, or a 5xx: the API server is down or overloaded."""
    CONFLICT = "conflict"
    """409: someone changed a slice between our read and our write (retried at once)."""
    REJECTED = "rejected"
    """Any other error status: RBAC, admission policy, an invalid slice."""


def publish_failure(error: KubeError) -> PublishFailure:
    """The ``reason`` label of a failed ResourceSlice sync."""
    if isinstance(error, ConnectionFailed) or (isinstance(error, ApiError) and error.status >= 500):
        return PublishFailure.UNREACHABLE
    if isinstance(error, ApiError) and error.status == 409:
        return PublishFailure.CONFLICT
    return PublishFailure.REJECTED


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One exported metric, for the README table and the tests."""

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str


def _m(name: str, kind: str, labels: tuple[str, ...], help_text: str) -> MetricInfo:
    return MetricInfo(f"{PREFIX}_{name}", kind, labels, help_text)


#: Every metric we export, as scraped (counters with their ``_total`` suffix).
METRICS = (
    _m(
        "prepare_requests_total",
        "counter",
        (),
        "NodePrepareResources calls that carried claims (the liveness probe's empty calls are "
        "not counted).",
    ),
    _m(
        "unprepare_requests_total",
        "counter",
        (),
        "NodeUnprepareResources calls that carried claims.",
    ),
    _m(
        "prepare_errors_total",
        "counter",
        ("reason",),
        "Claims whose prepare failed, by reason: "
        + ", ".join(r.value for r in FailureReason)
        + ".",
    ),
    _m(
        "unprepare_errors_total",
        "counter",
        ("reason",),
        "Claims whose unprepare failed, by reason (as for prepare).",
    ),
    _m(
        "prepare_duration_seconds",
        "histogram",
        (),
        "Duration of NodePrepareResources calls, from arrival to answer (claim reads and the "
        "wait for the serialization lock included).",
    ),
    _m(
        "unprepare_duration_seconds",
        "histogram",
        (),
        "Duration of NodeUnprepareResources calls, from arrival to answer.",
    ),
    _m(
        "requests_in_flight",
        "gauge",
        ("method",),
        "Prepare/unprepare calls being served now (waiting for the lock included).",
    ),
    _m(
        "checkpoint_write_duration_seconds",
        "histogram",
        (),
        "Duration of checkpoint writes (temp file, fsync, rename; the last write of a call "
        "also fsyncs the directory).",
    ),
    _m(
        "publish_errors_total",
        "counter",
        ("reason",),
        "Failed ResourceSlice syncs, by reason: "
        + ", ".join(r.value for r in PublishFailure)
        + ".",
    ),
    _m(
        "device_allocated_cores",
        "gauge",
        ("device",),
        "Compute units of the DCU held by prepared claims (all of them for a whole DCU).",
    ),
    _m(
        "device_allocated_memory_bytes",
        "gauge",
        ("device",),
        "Memory of the DCU held by prepared claims, in bytes.",
    ),
    _m(
        "device_shares",
        "gauge",
        ("device",),
        "Prepared allocations of the DCU: vDCU shares plus whole-device allocations.",
    ),
    _m("device_capacity_cores", "gauge", ("device",), "Compute units of the DCU."),
    _m("device_capacity_memory_bytes", "gauge", ("device",), "Memory of the DCU, in bytes."),
    _m(
        "device_capacity_vdevices",
        "gauge",
        ("device",),
        "vDCU shares the DCU can hold at once.",
    ),
    _m(
        "device_healthy",
        "gauge",
        ("device",),
        "1 when the last health check found the DCU Healthy, 0 when Unhealthy or Unknown (its "
        "checks could not be read); absent until the first check.",
    ),
    _m(
        "device_unhealthy_reason",
        "gauge",
        ("device", "reason"),
        "1 for the reason an Unhealthy DCU is tainted with, 0 for the others (all 0 when "
        "Healthy or Unknown): " + ", ".join(r.value for r in UnhealthyReason) + ".",
    ),
    _m(
        "orphans_cleaned_total",
        "counter",
        (),
        "Prepared claims unprepared by orphan cleanup because their ResourceClaim was deleted "
        "or replaced (0 with --orphan-interval 0).",
    ),
)
_HELP = {info.name: info.help for info in METRICS}


def _help(name: str) -> str:
    return _HELP[f"{PREFIX}_{name}"]


class DeviceCollector(Collector):
    """Per-device gauges, computed when scraped: capacity, usage, health.

    Capacity comes from the inventory, usage from the plugin's state, health from the health
    board. A usage read that fails (a corrupt checkpoint) leaves the usage gauges out of that
    scrape instead of failing it, and is logged once until a read works again. Without a
    reader (``None``: a fake core, no board) the gauges it would feed are not exported at all.
    """

    def __init__(
        self,
        devices: Sequence[DcuDevice],
        *,
        read_usage: Callable[[], Mapping[DeviceName, DeviceUsage]] | None,
        read_health: Callable[[], Sequence[DeviceHealth]] | None,
    ) -> None:
        self.devices = tuple(devices)
        self.read_usage = read_usage
        self.read_health = read_health
        self._failing = False

    def describe(self) -> Iterable[Metric]:
        """The families without samples, so registering never reads the checkpoint."""
        return self._families(with_samples=False)

    def collect(self) -> Iterable[Metric]:
        """The families with one sample per DCU."""
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> list[Metric]:
        families: list[Metric] = []
        for name, field in (
            ("device_capacity_cores", "compute_units"),
            ("device_capacity_memory_bytes", "memory_bytes"),
            ("device_capacity_vdevices", "max_vdevices"),
        ):
            family = GaugeMetricFamily(f"{PREFIX}_{name}", _help(name), labels=["device"])
            if with_samples:
                for dcu in self.devices:
                    family.add_metric([dcu.name], getattr(dcu, field))
            families.append(family)
        if self.read_health is not None:
            families.extend(self._health(self.read_health() if with_samples else ()))
        if self.read_usage is None:
            return families
        usage = self._usage() if with_samples else {}
        if usage is None:
            return families
        for name, field in (
            ("device_allocated_cores", "cores"),
            ("device_allocated_memory_bytes", "memory_bytes"),
            ("device_shares", "shares"),
        ):
            family = GaugeMetricFamily(f"{PREFIX}_{name}", _help(name), labels=["device"])
            for device, held in sorted(usage.items()):
                family.add_metric([device], getattr(held, field))
            families.append(family)
        return families

    @staticmethod
    def _health(records: Sequence[DeviceHealth]) -> list[Metric]:
        """``device_healthy`` and ``device_unhealthy_reason`` for the board's latest records.

        The reason is a separate gauge rather than a label of ``device_healthy``: a label that
        changes with the verdict would end one series and start another at every transition,
        breaking ``changes()`` and ``avg_over_time()`` over a device's health. It is a state
        set (every reason present, 1 for the current one) so that no series appears or
        vanishes; that costs len(UnhealthyReason) = 6 series per DCU, a fixed number. The
        free-text message stays in the logs and the kubelet's health report.
        """
        healthy = GaugeMetricFamily(
            f"{PREFIX}_device_healthy", _help("device_healthy"), labels=["device"]
        )
        reasons = GaugeMetricFamily(
            f"{PREFIX}_device_unhealthy_reason",
            _help("device_unhealthy_reason"),
            labels=["device", "reason"],
        )
        for record in records:
            healthy.add_metric([record.device], int(record.status is HealthStatus.HEALTHY))
            for reason in UnhealthyReason:
                reasons.add_metric([record.device, reason.value], int(record.reason is reason))
        return [healthy, reasons]

    def _usage(self) -> Mapping[DeviceName, DeviceUsage] | None:
        assert self.read_usage is not None
        try:
            usage = self.read_usage()
        except DriverError as exc:
            if not self._failing:
                self._failing = True
                logger.warning("per-device metrics left out: cannot read the usage: %s", exc)
            return None
        if self._failing:
            self._failing = False
            logger.info("per-device metrics are back")
        return usage


class OrphanCollector(Collector):
    """``orphans_cleaned_total``, read when scraped from the count the cleaner keeps anyway.

    Reading beats counting through a hook: the cleaner stays untouched (its ``cleaned`` is
    there for this), and the counter cannot disagree with the cleaner. Without a reader
    (cleanup is off) the counter is exported at 0, which is the truth.
    """

    def __init__(self, read_cleaned: Callable[[], int] | None) -> None:
        self.read_cleaned = read_cleaned

    def describe(self) -> Iterable[Metric]:
        """The family without reading the count."""
        return [self._family(None)]

    def collect(self) -> Iterable[Metric]:
        """The counter with its one sample."""
        return [self._family(self.read_cleaned() if self.read_cleaned is not None else 0)]

    @staticmethod
    def _family(cleaned: int | None) -> CounterMetricFamily:
        return CounterMetricFamily(
            f"{PREFIX}_orphans_cleaned", _help("orphans_cleaned_total"), value=cleaned
        )


class DriverMetrics:
    """All metrics of one daemon in their own registry. Thread-safe.

    Implements the servicer's ``CallObserver``. Every labelled series is created at zero up
    front, so a rate over a reason that never happened is 0, not absent. The readers are
    called at scrape time, on the HTTP server's thread: ``read_usage`` (the core's device
    usage), ``read_health`` (the health board's latest records) and ``read_orphans_cleaned``
    (the orphan cleaner's count); each must be thread-safe.
    """

    def __init__(
        self,
        *,
        devices: Sequence[DcuDevice] = (),
        read_usage: Callable[[], Mapping[DeviceName, DeviceUsage]] | None = None,
        read_health: Callable[[], Sequence[DeviceHealth]] | None = None,
        read_orphans_cleaned: Callable[[], int] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = {
            method: Counter(
                f"{PREFIX}_{method}_requests",
                _help(f"{method}_requests_total"),
                registry=registry,
            )
            for method in DraMethod
        }
        self.errors = {
            method: Counter(
                f"{PREFIX}_{method}_errors",
                _help(f"{method}_errors_total"),
                ["reason"],
                registry=registry,
            )
            for method in DraMethod
        }
        self.durations = {
            method: Histogram(
                f"{PREFIX}_{method}_duration_seconds",
                _help(f"{method}_duration_seconds"),
                buckets=CALL_BUCKETS_S,
                registry=registry,
            )
            for method in DraMethod
        }
        self.in_flight = Gauge(
            f"{PREFIX}_requests_in_flight",
            _help("requests_in_flight"),
            ["method"],
            registry=registry,
        )
        self.checkpoint_writes = Histogram(
            f"{PREFIX}_checkpoint_write_duration_seconds",
            _help("checkpoint_write_duration_seconds"),
            buckets=CHECKPOINT_BUCKETS_S,
            registry=registry,
        )
        self.publish_errors = Counter(
            f"{PREFIX}_publish_errors",
            _help("publish_errors_total"),
            ["reason"],
            registry=registry,
        )
        for method in DraMethod:
            self.in_flight.labels(method.value)
            for reason in FailureReason:
                self.errors[method].labels(reason.value)
        for publish_reason in PublishFailure:
            self.publish_errors.labels(publish_reason.value)
        registry.register(DeviceCollector(devices, read_usage=read_usage, read_health=read_health))
        registry.register(OrphanCollector(read_orphans_cleaned))

    # --- outcomes.CallObserver ----------------------------------------------------------------

    def call_started(self, method: DraMethod) -> None:
        """A call arrived."""
        self.in_flight.labels(method.value).inc()

    def call_finished(
        self, method: DraMethod, *, duration_s: float, failures: Sequence[FailureReason]
    ) -> None:
        """A call ended: count it, time it, count its failed claims."""
        self.in_flight.labels(method.value).dec()
        self.requests[method].inc()
        self.durations[method].observe(duration_s)
        for reason in failures:
            self.errors[method].labels(reason.value).inc()

    # --- the core, observed from outside ------------------------------------------------------

    def checkpoint_written(self, duration_s: float) -> None:
        """A checkpoint write (successful or not) took ``duration_s``."""
        self.checkpoint_writes.observe(duration_s)

    def publish_failed(self, error: KubeError) -> None:
        """A ResourceSlice sync failed with ``error``."""
        self.publish_errors.labels(publish_failure(error).value).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format, as ``/metrics`` serves it."""
        return bytes(generate_latest(self.registry))


def _wrap_method(obj: object, name: str, wrap: Callable[[Callable[..., Any]], Any]) -> None:
    """Replace ``obj.<name>`` on this instance only by ``wrap(original)``.

    Fails loudly (``TypeError``) when the method is missing, so a rename in the core breaks
    the metrics tests instead of silently losing a metric.
    """
    original = getattr(obj, name, None)
    if not callable(original):
        raise TypeError(f"{type(obj).__name__} has no method {name}() to observe")
    setattr(obj, name, functools.wraps(original)(wrap(original)))


#: The method of ``state.DcuPlugin`` that writes the checkpoint (observed, never changed).
CHECKPOINT_SAVE_METHOD = "_save"
#: The method of ``publisher.SlicePublisher`` that runs one sync and raises ``KubeError``.
PUBLISH_SYNC_METHOD = "sync_once"


def observe_checkpoint_writes(plugin: object, metrics: DriverMetrics) -> None:
    """Time every checkpoint write of ``plugin`` (a ``state.DcuPlugin``) into ``metrics``."""

    def wrap(save: Callable[..., Any]) -> Callable[..., Any]:
        def timed_save(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return save(*args, **kwargs)
            finally:
                metrics.checkpoint_written(time.perf_counter() - started)

        return timed_save

    _wrap_method(plugin, CHECKPOINT_SAVE_METHOD, wrap)


def observe_publish_errors(publisher: object, metrics: DriverMetrics) -> None:
    """Count every failed sync of ``publisher`` (a ``SlicePublisher``) into ``metrics``."""

    def wrap(sync: Callable[..., Any]) -> Callable[..., Any]:
        def counted_sync(*args: Any, **kwargs: Any) -> Any:
            try:
                return sync(*args, **kwargs)
            except KubeError as exc:
                metrics.publish_failed(exc)
                raise

        return counted_sync

    _wrap_method(publisher, PUBLISH_SYNC_METHOD, wrap)


class MetricsServerError(DriverError):
    """The ``/metrics`` endpoint cannot listen (address in use, bad host)."""


class MetricsServer:
    """``/metrics`` over HTTP on a daemon thread (prometheus_client's WSGI server)."""

    def __init__(self, metrics: DriverMetrics, *, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen and serve; ``port`` becomes the bound port. Raises ``MetricsServerError``."""
        try:
            server, thread = start_http_server(
                self.port, addr=self.host, registry=self.metrics.registry
            )
        except OSError as exc:
            raise MetricsServerError(
                f"cannot serve metrics on {_address(self.host, self.port)}: "
                f"{exc.strerror or exc}; choose another --metrics-addr"
            ) from exc
        self._server, self._thread = server, thread
        self.port = int(server.server_port)
        logger.info(
            "serving Prometheus metrics on http://%s/metrics", _address(self.host, self.port)
        )

    def stop(self) -> None:
        """Stop serving and close the socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
