"""Metrics: gitdock's instruments behind a typed facade, exported over OTLP and as Prometheus text.

Import-cheap: only the OTel metrics API is imported here. ``Metrics.noop()`` (the default
until ``telemetry.setup_telemetry`` installs real ones) records nothing and starts no thread.
``create_metrics`` builds the SDK side: an in-process reader that ``render_prometheus``
collects on demand (the agent's ``/metrics``) and, optionally, a periodic OTLP push reader.

Prometheus names follow the OTel compatibility rules: dots become underscores, the unit is a
suffix (``_seconds``) and counters end in ``_total``::

    gitdock_reconcile_duration_seconds      histogram  project, result
    gitdock_reconciles_total                counter    project, result
    gitdock_operations_total                counter    kind, result
    gitdock_drift_items                     gauge      project
    gitdock_last_apply_timestamp_seconds    gauge      project
    gitdock_verification_failures_total     counter    reason
    gitdock_git_fetch_duration_seconds      histogram  source
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from opentelemetry.metrics import Meter, NoOpMeter

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, MetricReader, MetricsData
    from opentelemetry.sdk.resources import Resource

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "Metrics",
    "create_metrics",
    "format_prometheus",
    "get_metrics",
    "render_prometheus",
    "set_metrics",
]

METER_NAME: Final = "gitdock"
PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: a no-op reconcile takes milliseconds, a cold apply or a slow fetch minutes.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """gitdock's instruments with one typed method per measurement. Thread-safe."""

    def __init__(self, meter: Meter, reader: InMemoryMetricReader | None = None) -> None:
        self._reader = reader
        self._reconcile_duration = meter.create_histogram(
            "gitdock.reconcile.duration",
            unit="s",
            description="Duration of one reconcile, by project and result.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._reconciles = meter.create_counter(
            "gitdock.reconciles", unit="1", description="Reconciles finished, by project and result."
        )
        self._operations = meter.create_counter(
            "gitdock.operations", unit="1", description="Plan operations executed, by kind and result."
        )
        self._drift = meter.create_gauge(
            "gitdock.drift.items",
            unit="1",
            description="Operations the last plan of a project held (0 means converged).",
        )
        self._last_apply = meter.create_gauge(
            "gitdock.last_apply.timestamp",
            unit="s",
            description="Unix time of the last successful apply of a project.",
        )
        self._verification_failures = meter.create_counter(
            "gitdock.verification.failures",
            unit="1",
            description="Images refused by signature policy, by reason.",
        )
        self._git_fetch_duration = meter.create_histogram(
            "gitdock.git.fetch.duration",
            unit="s",
            description="Duration of one git fetch, by source.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    @classmethod
    def noop(cls) -> Metrics:
        """Metrics that record nothing (telemetry disabled or not set up)."""
        return cls(NoOpMeter(METER_NAME))

    @property
    def is_noop(self) -> bool:
        return self._reader is None

    def record_reconcile(self, project: str, result: str, seconds: float) -> None:
        attributes = {"project": project, "result": result}
        self._reconcile_duration.record(seconds, attributes)
        self._reconciles.add(1, attributes)

    def count_operation(self, kind: str, result: str = "done") -> None:
        self._operations.add(1, {"kind": kind, "result": result})

    def set_drift(self, project: str, n: int) -> None:
        self._drift.set(n, {"project": project})

    def set_last_apply(self, project: str, ts: float) -> None:
        self._last_apply.set(ts, {"project": project})

    def count_verification_failure(self, reason: str) -> None:
        self._verification_failures.add(1, {"reason": reason})

    def record_git_fetch(self, source: str, seconds: float) -> None:
        self._git_fetch_duration.record(seconds, {"source": source})

    def render_prometheus(self) -> str:
        """Everything recorded so far in Prometheus text format 0.0.4 ("" for no-op metrics)."""
        if self._reader is None:
            return ""
        data = self._reader.get_metrics_data()
        return "" if data is None else format_prometheus(data)


def create_metrics(
    *, resource: Resource | None = None, push_reader: MetricReader | None = None
) -> tuple[Metrics, MeterProvider]:
    """SDK-backed metrics: an in-process reader for ``render_prometheus`` plus ``push_reader``.

    No thread is started unless ``push_reader`` starts one. The caller shuts the provider down.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()  # cumulative by default, as Prometheus needs
    readers: list[MetricReader] = [reader]
    if push_reader is not None:
        readers.append(push_reader)
    provider = MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=False)
    return Metrics(provider.get_meter(METER_NAME), reader), provider


_active_lock = threading.Lock()
_active = Metrics.noop()


def get_metrics() -> Metrics:
    """The process's metrics: no-op until ``setup_telemetry`` (or ``set_metrics``) installs some."""
    return _active


def set_metrics(metrics: Metrics) -> None:
    global _active
    with _active_lock:
        _active = metrics


def render_prometheus() -> str:
    """The process's metrics as Prometheus text, for ``GET /metrics`` (``PROMETHEUS_CONTENT_TYPE``)."""
    return get_metrics().render_prometheus()


# --- Prometheus text format -----------------------------------------------------------------

_UNITS: Final = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "%": "percent"}
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")


def prometheus_name(name: str, unit: str, *, counter: bool) -> str:
    """An OTel instrument name as a Prometheus metric name. Pure."""
    base = _INVALID_NAME.sub("_", name)
    if base[:1].isdigit():
        base = f"_{base}"
    suffix = _UNITS.get(unit, "")
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    if counter and not base.endswith("_total"):
        base = f"{base}_total"
    return base


def _label_name(key: str) -> str:
    name = _INVALID_LABEL.sub("_", key)
    return f"_{name}" if name[:1].isdigit() else name


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def _labels(attributes: Mapping[str, object] | None, extra: Sequence[tuple[str, str]] = ()) -> str:
    pairs = [(_label_name(k), str(v)) for k, v in sorted((attributes or {}).items())]
    pairs += list(extra)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in pairs) + "}"


def format_prometheus(data: MetricsData) -> str:
    """``data`` (cumulative) in Prometheus text exposition format 0.0.4. Pure.

    One ``# HELP``/``# TYPE`` header per metric family; histograms as cumulative ``_bucket``
    lines (``le``, ending with ``+Inf``) plus ``_sum`` and ``_count``.
    """
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

    families: dict[str, tuple[str, str, list[str]]] = {}
    for metric in _metrics(data):
        samples: list[str] = []
        point_data = metric.data
        if isinstance(point_data, Histogram):
            kind = "histogram"
            name = prometheus_name(metric.name, metric.unit or "", counter=False)
            for hp in point_data.data_points:
                cumulative = 0
                bounds = [*hp.explicit_bounds, math.inf]
                for bound, count in zip(bounds, hp.bucket_counts, strict=False):
                    cumulative += count
                    le = _labels(hp.attributes, [("le", _number(float(bound)))])
                    samples.append(f"{name}_bucket{le} {cumulative}")
                samples.append(f"{name}_sum{_labels(hp.attributes)} {_number(hp.sum)}")
                samples.append(f"{name}_count{_labels(hp.attributes)} {hp.count}")
        elif isinstance(point_data, Sum | Gauge):
            is_counter = isinstance(point_data, Sum) and point_data.is_monotonic
            kind = "counter" if is_counter else "gauge"
            name = prometheus_name(metric.name, metric.unit or "", counter=is_counter)
            samples += [f"{name}{_labels(p.attributes)} {_number(p.value)}" for p in point_data.data_points]
        else:  # exponential histograms: gitdock creates none
            continue
        family = families.setdefault(name, (kind, metric.description or metric.name, []))
        family[2].extend(samples)
    lines: list[str] = []
    for name, (kind, help_text, samples) in sorted(families.items()):
        lines.append(f"# HELP {name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(samples)
    return "\n".join(lines) + "\n" if lines else ""


def _metrics(data: MetricsData) -> Iterable[Metric]:
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            yield from scope_metrics.metrics
