"""Metrics: gitdock's instruments behind a typed facade, exported over OTLP and to Prometheus.

Import-cheap: only the OTel metrics API is imported here. ``Metrics.noop()`` (the default
until ``telemetry.setup_telemetry`` installs real ones) records nothing and starts no thread.
``create_metrics`` builds the SDK side: an in-process reader that ``render_prometheus``
collects on demand (the agent's ``/metrics``) and, optionally, a periodic OTLP push reader.

The Prometheus text is written by ``prometheus_client`` (this is the one module that imports
it): the OTel data points become its metric families, and so do the agent's own ``Family``
values (webhook deliveries, readiness). Names follow the OTel compatibility rules: dots become
underscores, the unit is a suffix (``_seconds``) and counters end in ``_total``::

    gitdock_reconcile_duration_seconds      histogram  project, host, result
    gitdock_reconciles_total                counter    project, host, result
    gitdock_operations_total                counter    kind, host, result
    gitdock_drift_items                     gauge      project, host
    gitdock_last_apply_timestamp_seconds    gauge      project, host
    gitdock_verification_failures_total     counter    reason, host
    gitdock_git_fetch_duration_seconds      histogram  source, host
    gitdock_rollbacks_total                 counter    project, host, result
    gitdock_notifications_total             counter    result

``host`` is the Docker engine a source deploys to, as ``agent.targets.display_host`` names it
(a context's name or the host URL, never a user or a credential); ``Metrics.for_host`` gives
the view that adds it (the agent's reconcilers use one each; the CLI records none).
"""

from __future__ import annotations

import copy
import math
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Final

from opentelemetry.metrics import Counter, Histogram, Meter, NoOpMeter, _Gauge

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric, MetricReader, MetricsData
    from opentelemetry.sdk.resources import Resource
    from prometheus_client.metrics_core import Metric as PromMetric

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "Family",
    "FamilyKind",
    "Metrics",
    "create_metrics",
    "get_metrics",
    "prometheus_name",
    "render_prometheus",
    "set_metrics",
]

METER_NAME: Final = "gitdock"
PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Seconds: a no-op reconcile takes milliseconds, a cold apply or a slow fetch minutes.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class _Instrument:
    """An OTel instrument's name, unit and description (its Prometheus HELP)."""

    name: str
    unit: str
    description: str


RECONCILE_DURATION: Final = _Instrument(
    "gitdock.reconcile.duration", "s", "Duration of one reconcile, by project and result."
)
RECONCILES: Final = _Instrument("gitdock.reconciles", "1", "Reconciles finished, by project and result.")
OPERATIONS: Final = _Instrument("gitdock.operations", "1", "Plan operations executed, by kind and result.")
DRIFT_ITEMS: Final = _Instrument(
    "gitdock.drift.items", "1", "Operations the last plan of a project held (0 means converged)."
)
LAST_APPLY: Final = _Instrument(
    "gitdock.last_apply.timestamp", "s", "Unix time of the last successful apply of a project."
)
VERIFICATION_FAILURES: Final = _Instrument(
    "gitdock.verification.failures", "1", "Images refused by signature policy, by reason."
)
ROLLBACKS: Final = _Instrument(
    "gitdock.rollbacks", "1", "Rollbacks to the last healthy revision, by project and result."
)
NOTIFICATIONS: Final = _Instrument(
    "gitdock.notifications", "1", "Commit statuses and webhook notifications: sent, failed or dropped."
)
GIT_FETCH_DURATION: Final = _Instrument(
    "gitdock.git.fetch.duration", "s", "Duration of one git fetch, by source."
)


def _counter(meter: Meter, spec: _Instrument) -> Counter:
    return meter.create_counter(spec.name, unit=spec.unit, description=spec.description)


def _gauge(meter: Meter, spec: _Instrument) -> _Gauge:
    return meter.create_gauge(spec.name, unit=spec.unit, description=spec.description)


def _histogram(meter: Meter, spec: _Instrument) -> Histogram:
    return meter.create_histogram(
        spec.name,
        unit=spec.unit,
        description=spec.description,
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )


class Metrics:
    """gitdock's instruments with one typed method per measurement. Thread-safe."""

    def __init__(self, meter: Meter, reader: InMemoryMetricReader | None = None) -> None:
        self._reader = reader
        self.host = ""  # the ``host`` label of every per-source measurement
        self._reconcile_duration = _histogram(meter, RECONCILE_DURATION)
        self._reconciles = _counter(meter, RECONCILES)
        self._operations = _counter(meter, OPERATIONS)
        self._drift = _gauge(meter, DRIFT_ITEMS)
        self._last_apply = _gauge(meter, LAST_APPLY)
        self._verification_failures = _counter(meter, VERIFICATION_FAILURES)
        self._git_fetch_duration = _histogram(meter, GIT_FETCH_DURATION)
        self._rollbacks = _counter(meter, ROLLBACKS)
        self._notifications = _counter(meter, NOTIFICATIONS)

    @classmethod
    def noop(cls) -> Metrics:
        """Metrics that record nothing (telemetry disabled or not set up)."""
        return cls(NoOpMeter(METER_NAME))

    @property
    def is_noop(self) -> bool:
        return self._reader is None

    def for_host(self, host: str) -> Metrics:
        """A view on the same instruments whose per-source measurements carry ``host``."""
        view = copy.copy(self)
        view.host = host
        return view

    def _labels(self, **labels: str) -> dict[str, str]:
        """``labels`` plus ``host`` when this view has one (an unset host is left out, not "")."""
        return {**labels, "host": self.host} if self.host else labels

    def record_reconcile(self, project: str, result: str, seconds: float) -> None:
        attributes = self._labels(project=project, result=result)
        self._reconcile_duration.record(seconds, attributes)
        self._reconciles.add(1, attributes)

    def count_operation(self, kind: str, result: str = "done") -> None:
        self._operations.add(1, self._labels(kind=kind, result=result))

    def set_drift(self, project: str, n: int) -> None:
        self._drift.set(n, self._labels(project=project))

    def set_last_apply(self, project: str, ts: float) -> None:
        self._last_apply.set(ts, self._labels(project=project))

    def count_verification_failure(self, reason: str) -> None:
        self._verification_failures.add(1, self._labels(reason=reason))

    def count_rollback(self, project: str, result: str) -> None:
        """One rollback of ``project`` finished: ``success`` or ``failure``."""
        self._rollbacks.add(1, self._labels(project=project, result=result))

    def count_notification(self, result: str) -> None:
        """One commit status or webhook notification ``sent``, ``failed`` (given up) or ``dropped``."""
        self._notifications.add(1, {"result": result})

    def record_git_fetch(self, source: str, seconds: float) -> None:
        self._git_fetch_duration.record(seconds, self._labels(source=source))

    def families(self) -> list[PromMetric]:
        """Everything recorded so far as Prometheus metric families, by name ([] for no-op)."""
        if self._reader is None:
            return []
        data = self._reader.get_metrics_data()
        return [] if data is None else _otel_families(data)

    def render_prometheus(self) -> str:
        """Everything recorded so far in Prometheus text format 0.0.4 ("" for no-op metrics)."""
        return _exposition(self.families())


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


# --- Prometheus exposition ------------------------------------------------------------------


class FamilyKind(str, Enum):
    COUNTER = "counter"
    GAUGE = "gauge"


@dataclass(frozen=True)
class Family:
    """A metric family kept outside OTel (the agent's own counters and gauges).

    ``name`` is the Prometheus name (a counter's ends in ``_total``); each sample is
    ``(labels, value)``, and every sample of a family has the same label names.
    """

    name: str
    kind: FamilyKind
    help: str
    samples: Sequence[tuple[Mapping[str, str], float]] = field(default=())


def render_prometheus(extra: Iterable[Family] = (), *, stand_in: Iterable[Family] = ()) -> str:
    """The process's metrics plus ``extra`` as Prometheus text (``PROMETHEUS_CONTENT_TYPE``).

    ``stand_in`` families are rendered only when the process's instruments hold nothing yet
    (telemetry metrics off): the agent's own reconcile counter stands in for the OTel one.
    """
    shared = get_metrics().families()
    own = [_family(f) for f in (*extra, *([] if shared else stand_in))]
    return _exposition([*shared, *own])


def _exposition(families: Sequence[PromMetric]) -> str:
    from prometheus_client.exposition import generate_latest

    return generate_latest(_Families(families)).decode()


class _Families:
    """A prometheus_client collector over metric families gathered beforehand."""

    def __init__(self, families: Sequence[PromMetric]) -> None:
        self._families = families

    def collect(self) -> Iterable[PromMetric]:
        return self._families


def _family(family: Family) -> PromMetric:
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily

    names = sorted(family.samples[0][0]) if family.samples else []
    kind = CounterMetricFamily if family.kind is FamilyKind.COUNTER else GaugeMetricFamily
    built = kind(family.name, family.help, labels=names)
    for labels, value in family.samples:
        built.add_metric([labels[n] for n in names], value)
    return built


_UNITS: Final = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "%": "percent"}
_INVALID_NAME = re.compile(r"[^a-zA-Z0-9_:]")


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


def _otel_families(data: MetricsData) -> list[PromMetric]:
    """``data`` (cumulative) as prometheus_client families, one per name, sorted by name.

    Exponential histograms are left out: gitdock creates none.
    """
    families: dict[str, PromMetric] = {}
    for metric in _metrics(data):
        family = _otel_family(metric)
        if family is None:
            continue
        known = families.setdefault(family.name, family)
        if known is not family:
            known.samples.extend(family.samples)
    return [families[name] for name in sorted(families)]


def _otel_family(metric: Metric) -> PromMetric | None:
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    data = metric.data
    help_text = metric.description or metric.name
    is_counter = isinstance(data, Sum) and data.is_monotonic
    name = prometheus_name(metric.name, metric.unit or "", counter=is_counter)
    if isinstance(data, Histogram):
        names = _label_names(data.data_points)
        histogram = HistogramMetricFamily(name, help_text, labels=names)
        for hp in data.data_points:
            histogram.add_metric(
                _label_values(names, hp.attributes), _buckets(hp.explicit_bounds, hp.bucket_counts), hp.sum
            )
        return histogram
    if not isinstance(data, Sum | Gauge):
        return None
    kind = CounterMetricFamily if is_counter else GaugeMetricFamily
    names = _label_names(data.data_points)
    family = kind(name, help_text, labels=names)
    for point in data.data_points:
        family.add_metric(_label_values(names, point.attributes), point.value)
    return family


def _label_names(points: Iterable[object]) -> list[str]:
    names: set[str] = set()
    for point in points:
        names.update(getattr(point, "attributes", None) or {})
    return sorted(names)


def _label_values(names: Sequence[str], attributes: Mapping[str, object] | None) -> list[str]:
    """The value of each label in ``names``; "" for one this point lacks (Prometheus: unset)."""
    attributes = attributes or {}
    return [str(attributes.get(name, "")) for name in names]


def _buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """OTel's per-bucket counts as Prometheus's cumulative ``(le, count)`` pairs, ending at +Inf."""
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip([*bounds, math.inf], counts, strict=False):
        cumulative += count
        buckets.append(("+Inf" if math.isinf(bound) else repr(float(bound)), cumulative))
    return buckets


def _metrics(data: MetricsData) -> Iterator[Metric]:
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            yield from scope_metrics.metrics
