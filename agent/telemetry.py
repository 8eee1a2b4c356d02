"""Telemetry: gitdock's one seam to OpenTelemetry tracing (metrics live in ``metrics``).

The rest of gitdock reaches OTel only through here: ``converge_hooks`` builds the typed
``runtime.converge.ConvergeHooks`` that trace a converge's steps, ``sync_span``/``step_span``
frame a reconcile, ``add_drift_events`` marks drift on it, and ``SpanContext`` (re-exported)
carries the webhook requests a reconcile links to.

Import-cheap and inert: this module imports only the OTel API. Until ``setup_telemetry`` runs,
or when telemetry is disabled, every helper works on the API's no-op tracer and no thread is
started. The SDK and the exporters are imported by ``setup_telemetry`` only.

Configuration: the fields a ``TelemetryConfig`` sets explicitly win; the standard ``OTEL_*``
variables fill the rest (``TelemetryConfig.resolve``); ``OTEL_SDK_DISABLED=true`` turns all of
it off. With no endpoint and no ``OTEL_TRACES_EXPORTER`` anywhere, nothing is exported.

A slow or dead collector never blocks or fails a reconcile: spans go to a bounded queue that
drops when full, each export gives up after ``export_timeout``, and ``Telemetry.shutdown`` waits
at most that long.

Trace shape (span names)::

    SYNC <project>                      cicd.pipeline.*, vcs.*, deployment.environment.name;
    │                                   events "drift.item" when drift was found
    ├── fetch | load | resolve | verify | observe | execute
    ├── verify <image>                  container.image.name, oci.manifest.digest (under verify)
    ├── plan                            event "plan" carries the rendered plan
    └── execute
        └── <OpKind> <resource>         gitdock.operation.*, container.*
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from pydantic import BaseModel, ConfigDict, Field

from gitdock.agent.metrics import Metrics, get_metrics, set_metrics
from gitdock.specs.errors import PermanentError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from gitdock.runtime.converge import ConvergeHooks
    from gitdock.runtime.drift.detect import DriftItem
    from gitdock.runtime.execute import ExecEvent
    from gitdock.runtime.plan import Operation, Plan

__all__ = [
    "LOG_FORMAT",
    "TRACER_NAME",
    "ExporterKind",
    "ImageSpan",
    "OperationSpans",
    "Protocol",
    "SpanContext",
    "Step",
    "SyncSpan",
    "Telemetry",
    "TelemetryConfig",
    "TelemetryError",
    "TraceContextFilter",
    "add_drift_events",
    "add_plan_event",
    "add_policy_events",
    "converge_hooks",
    "extract_traceparent",
    "fail_span",
    "get_tracer",
    "image_span",
    "install_log_correlation",
    "operation_attributes",
    "operation_span",
    "record_error",
    "rollback_span",
    "setup_telemetry",
    "shutdown_telemetry",
    "step_span",
    "strip_credentials",
    "sync_span",
    "webhook_span",
]

log = logging.getLogger(__name__)

_E = TypeVar("_E", bound=Enum)

TRACER_NAME: Final = "gitdock"
ACTION: Final = "SYNC"
DEFAULT_SERVICE_NAME: Final = "gitdock"
DEFAULT_ENDPOINT: Final = "http://localhost:4318"
DEFAULT_GRPC_ENDPOINT: Final = "http://localhost:4317"
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s%(trace_context)s"

# Attribute names: OTel semantic conventions where one exists, gitdock.* otherwise.
CICD_PIPELINE_NAME: Final = "cicd.pipeline.name"
CICD_PIPELINE_ACTION: Final = "cicd.pipeline.action.name"
CICD_PIPELINE_RESULT: Final = "cicd.pipeline.result"
CICD_TASK_NAME: Final = "cicd.pipeline.task.name"
CICD_TASK_RESULT: Final = "cicd.pipeline.task.run.result"
VCS_URL: Final = "vcs.repository.url.full"
VCS_REF_NAME: Final = "vcs.ref.head.name"
VCS_REVISION: Final = "vcs.ref.head.revision"
DEPLOYMENT_ENV: Final = "deployment.environment.name"
SERVER_ADDRESS: Final = "server.address"  # the Docker engine a reconcile deploys to
SERVER_PORT: Final = "server.port"
CONTAINER_NAME: Final = "container.name"
CONTAINER_ID: Final = "container.id"
IMAGE_NAME: Final = "container.image.name"
IMAGE_TAGS: Final = "container.image.tags"
MANIFEST_DIGEST: Final = "oci.manifest.digest"
ERROR_TYPE: Final = "error.type"
OP_KIND: Final = "gitdock.operation.kind"
OP_CAUSE: Final = "gitdock.operation.cause"
OP_ID: Final = "gitdock.operation.id"
OP_RESULT: Final = "gitdock.operation.result"
OP_ERROR: Final = "gitdock.operation.error"
RESOURCE: Final = "gitdock.resource"
VERIFY_REASON: Final = "gitdock.verification.reason"
PLAN_EVENT: Final = "plan"
POLICY_LEVEL: Final = "gitdock.policy.level"
POLICY_VIOLATIONS: Final = "gitdock.policy.violations"
# On the observe step: the previous poll's snapshot was reused (no Docker event since it).
OBSERVE_REUSED: Final = "gitdock.observe.reused"


class TelemetryError(PermanentError):
    """The telemetry configuration cannot be used (an unknown exporter, a missing package)."""


class ExporterKind(str, Enum):
    """Where a signal goes: ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` values."""

    OTLP = "otlp"
    CONSOLE = "console"
    NONE = "none"


class Protocol(str, Enum):
    """OTLP transport: ``OTEL_EXPORTER_OTLP_PROTOCOL`` values gitdock can speak."""

    HTTP_PROTOBUF = "http/protobuf"
    GRPC = "grpc"


class Step(str, Enum):
    """The steps of one reconcile, each a child span of ``SYNC <project>``."""

    FETCH = "fetch"
    LOAD = "load"
    POLICY = "policy"
    RESOLVE = "resolve"
    VERIFY = "verify"
    OBSERVE = "observe"
    PLAN = "plan"
    EXECUTE = "execute"


class TelemetryConfig(BaseModel):
    """The agent config's ``telemetry:`` section. Unset fields come from ``OTEL_*`` (``resolve``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    endpoint: str | None = None  # base URL, as OTEL_EXPORTER_OTLP_ENDPOINT
    traces_endpoint: str | None = None  # full URL, as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    metrics_endpoint: str | None = None  # full URL, as OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
    protocol: Protocol = Protocol.HTTP_PROTOBUF
    service_name: str = DEFAULT_SERVICE_NAME
    environment: str | None = None
    resource_attributes: dict[str, str] = Field(default_factory=dict)
    traces_exporter: ExporterKind = ExporterKind.NONE  # resolve() picks otlp when an endpoint is set
    metrics: bool = True  # the instruments and /metrics; off means no-op
    metrics_exporter: ExporterKind = ExporterKind.NONE  # OTLP push of the same metrics
    metrics_interval: float = Field(default=60.0, gt=0)
    export_timeout: float = Field(default=3.0, gt=0, le=60)
    max_queue_size: int = Field(default=2048, ge=1)

    def resolve(self, env: Mapping[str, str] | None = None) -> TelemetryConfig:
        """This config with the ``OTEL_*`` variables of ``env`` filling the fields it leaves unset.

        Raises TelemetryError for a value gitdock cannot honour.
        """
        env = os.environ if env is None else env
        explicit = self.model_fields_set
        values: dict[str, Any] = {}

        def fill(name: str, value: object) -> None:
            if name not in explicit and value is not None:
                values[name] = value

        def var(*names: str) -> str | None:
            for name in names:
                value = env.get(name, "").strip()
                if value:
                    return value
            return None

        if (var("OTEL_SDK_DISABLED") or "").lower() == "true":
            return self.model_copy(update={"enabled": False})
        env_attributes = parse_resource_attributes(var("OTEL_RESOURCE_ATTRIBUTES") or "")
        values["resource_attributes"] = {**env_attributes, **self.resource_attributes}
        fill("endpoint", var("OTEL_EXPORTER_OTLP_ENDPOINT"))
        fill("traces_endpoint", var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        fill("metrics_endpoint", var("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
        fill("protocol", _choice(Protocol, "OTEL_EXPORTER_OTLP_PROTOCOL", var("OTEL_EXPORTER_OTLP_PROTOCOL")))
        fill("service_name", var("OTEL_SERVICE_NAME") or env_attributes.get("service.name"))
        legacy_environment = env_attributes.get("deployment.environment")
        fill("environment", env_attributes.get(DEPLOYMENT_ENV) or legacy_environment)
        fill("export_timeout", _millis("OTEL_EXPORTER_OTLP_TIMEOUT", var("OTEL_EXPORTER_OTLP_TIMEOUT")))
        fill("metrics_interval", _millis("OTEL_METRIC_EXPORT_INTERVAL", var("OTEL_METRIC_EXPORT_INTERVAL")))
        fill("max_queue_size", _int("OTEL_BSP_MAX_QUEUE_SIZE", var("OTEL_BSP_MAX_QUEUE_SIZE")))
        # Nothing is exported until someone says where: no endpoint and no exporter means none.
        has_endpoint = any(
            name in explicit or values.get(name)
            for name in ("endpoint", "traces_endpoint", "metrics_endpoint")
        )
        default = ExporterKind.OTLP if has_endpoint else ExporterKind.NONE
        traces = var("OTEL_TRACES_EXPORTER")
        metrics = var("OTEL_METRICS_EXPORTER")
        if metrics == "prometheus":  # the pull side is always served at /metrics
            metrics = "none"
        fill("traces_exporter", _choice(ExporterKind, "OTEL_TRACES_EXPORTER", traces) or default)
        fill("metrics_exporter", _choice(ExporterKind, "OTEL_METRICS_EXPORTER", metrics) or default)
        try:
            return self.model_validate({**self.model_dump(), **values})
        except ValueError as exc:
            raise TelemetryError(f"telemetry configuration: {exc}") from None

    def signal_endpoint(self, signal: str) -> str:
        """The URL to export ``signal`` (``traces`` or ``metrics``) to, per the OTLP exporter spec."""
        specific = self.traces_endpoint if signal == "traces" else self.metrics_endpoint
        if specific:
            return specific
        if self.protocol is Protocol.GRPC:
            return self.endpoint or DEFAULT_GRPC_ENDPOINT
        return f"{(self.endpoint or DEFAULT_ENDPOINT).rstrip('/')}/v1/{signal}"


def _choice(kind: type[_E], name: str, value: str | None) -> _E | None:
    if value is None:
        return None
    try:
        return kind(value.lower())
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise TelemetryError(f"{name}: {value!r} is not one of {allowed}") from None


def _millis(name: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value) / 1000
    except ValueError:
        raise TelemetryError(f"{name}: {value!r} is not a number of milliseconds") from None


def _int(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise TelemetryError(f"{name}: {value!r} is not an integer") from None


def parse_resource_attributes(raw: str) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``k=v,k2=v2``, values percent-encoded) as a dict. Pure."""
    attributes: dict[str, str] = {}
    for item in raw.split(","):
        key, eq, value = item.partition("=")
        if eq and key.strip():
            attributes[key.strip()] = unquote(value.strip())
    return attributes


# --- set-up and shutdown ------------------------------------------------------------------


class _GuardedExporter:
    """Wraps a SpanExporter so that once ``close`` is called, leftover batches drop at once."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.closed = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        from opentelemetry.sdk.trace.export import SpanExportResult

        if self.closed.is_set():
            return SpanExportResult.FAILURE
        try:
            return self.inner.export(spans)
        except Exception:  # an exporter bug must never reach a reconcile
            log.warning("span export failed", exc_info=True)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.closed.set()
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass
class Telemetry:
    """What ``setup_telemetry`` built. ``shutdown`` flushes within a bounded time."""

    config: TelemetryConfig
    metrics: Metrics
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    _exporter: _GuardedExporter | None = field(default=None, repr=False)
    _done: bool = field(default=False, repr=False)

    @property
    def is_tracing(self) -> bool:
        return self.tracer_provider is not None

    def tracer(self) -> Tracer:
        """A tracer on this set-up's provider (the no-op tracer when tracing is off)."""
        if self.tracer_provider is None:
            return trace.NoOpTracer()
        return self.tracer_provider.get_tracer(TRACER_NAME, _version())

    def force_flush(self, timeout: float | None = None) -> bool:
        """Export what is queued; True when it finished within ``timeout`` (default export_timeout)."""

        def flush() -> None:
            if self.tracer_provider is not None:
                self.tracer_provider.force_flush(int(self.config.export_timeout * 1000))
            if self.meter_provider is not None:
                self.meter_provider.force_flush(int(self.config.export_timeout * 1000))

        return _bounded(flush, self.config.export_timeout if timeout is None else timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop exporting; never raises, returns within ``timeout`` (default export_timeout).

        Returns True when everything was flushed in time; False means spans were dropped.
        """
        if self._done:
            return True
        self._done = True

        def stop() -> None:
            if self.tracer_provider is not None:
                self.tracer_provider.shutdown()
            if self.meter_provider is not None:
                self.meter_provider.shutdown(timeout_millis=self.config.export_timeout * 1000)

        finished = _bounded(stop, self.config.export_timeout if timeout is None else timeout)
        if self._exporter is not None:
            self._exporter.closed.set()  # a worker still exporting drops the rest at once
        if not finished:
            log.warning("telemetry: the collector did not take the last spans in time; dropped them")
        return finished


def _bounded(work: Callable[[], None], timeout: float) -> bool:
    """Run ``work`` on a daemon thread and wait at most ``timeout``; True when it finished."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except Exception as exc:  # telemetry trouble is logged, never raised
            failed.append(exc)

    thread = threading.Thread(target=run, name="gitdock-telemetry-flush", daemon=True)
    thread.start()
    thread.join(timeout)
    if failed:
        log.warning("telemetry flush failed: %s", failed[0])
    return not thread.is_alive() and not failed


_lock = threading.Lock()
_current: Telemetry | None = None
_atexit_registered = False


def setup_telemetry(
    config: TelemetryConfig | None = None,
    *,
    env: Mapping[str, str] | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Build tracing and metrics from ``config`` and the ``OTEL_*`` variables of ``env``.

    With ``set_global`` (the agent) the tracer provider becomes OTel's global one, so
    ``get_tracer()`` and the helpers here use it, ``get_metrics()`` returns these metrics and
    ``shutdown_telemetry`` runs at exit. OTel allows one global provider per process. Tests pass
    ``set_global=False`` and use ``Telemetry.tracer()``. Raises TelemetryError.
    """
    global _current, _atexit_registered
    resolved = (config or TelemetryConfig()).resolve(env)
    telemetry = _build(resolved)
    if set_global:
        with _lock:
            if _current is not None and _current.tracer_provider is not None and telemetry.is_tracing:
                telemetry.shutdown(0)
                raise TelemetryError("telemetry is already set up in this process")
            if telemetry.tracer_provider is not None:
                trace.set_tracer_provider(telemetry.tracer_provider)
            set_metrics(telemetry.metrics)
            _current = telemetry
            if not _atexit_registered:
                atexit.register(shutdown_telemetry)
                _atexit_registered = True
    return telemetry


def shutdown_telemetry(timeout: float | None = None) -> bool:
    """Flush and stop the global telemetry (bounded, never raises); a no-op when there is none."""
    with _lock:
        telemetry = _current
    return True if telemetry is None else telemetry.shutdown(timeout)


def _build(config: TelemetryConfig) -> Telemetry:
    if not config.enabled:
        return Telemetry(config, Metrics.noop())
    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, AttributeValue] = dict(config.resource_attributes)
    attributes["service.name"] = config.service_name
    attributes.setdefault("service.version", _version())
    if config.environment:
        attributes[DEPLOYMENT_ENV] = config.environment
    resource = Resource.create(attributes)

    tracer_provider: TracerProvider | None = None
    guarded: _GuardedExporter | None = None
    if config.traces_exporter is not ExporterKind.NONE:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        guarded = _GuardedExporter(_span_exporter(config))
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                guarded,  # type: ignore[arg-type]  # duck-typed SpanExporter (export/shutdown/force_flush)
                max_queue_size=config.max_queue_size,
                max_export_batch_size=min(512, config.max_queue_size),
                export_timeout_millis=config.export_timeout * 1000,
            )
        )

    meter_provider: MeterProvider | None = None
    metrics = Metrics.noop()
    if config.metrics:
        from gitdock.agent.metrics import create_metrics

        push = None
        if config.metrics_exporter is not ExporterKind.NONE:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            push = PeriodicExportingMetricReader(
                _metric_exporter(config),
                export_interval_millis=config.metrics_interval * 1000,
                export_timeout_millis=config.export_timeout * 1000,
            )
        metrics, meter_provider = create_metrics(resource=resource, push_reader=push)
    return Telemetry(config, metrics, tracer_provider, meter_provider, guarded)


def _span_exporter(config: TelemetryConfig) -> SpanExporter:
    if config.traces_exporter is ExporterKind.CONSOLE:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    endpoint = config.signal_endpoint("traces")
    if config.protocol is Protocol.GRPC:
        grpc = _import_grpc("trace_exporter")
        exporter: SpanExporter = grpc.OTLPSpanExporter(
            endpoint=endpoint, insecure=endpoint.startswith("http://"), timeout=config.export_timeout
        )
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, timeout=config.export_timeout)


def _metric_exporter(config: TelemetryConfig) -> Any:  # a MetricExporter; Any keeps the SDK import lazy
    if config.metrics_exporter is ExporterKind.CONSOLE:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    endpoint = config.signal_endpoint("metrics")
    if config.protocol is Protocol.GRPC:
        return _import_grpc("metric_exporter").OTLPMetricExporter(
            endpoint=endpoint, insecure=endpoint.startswith("http://"), timeout=config.export_timeout
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=endpoint, timeout=config.export_timeout)


def _import_grpc(module: str) -> Any:
    # Optional dependency (grpcio is large): imported by name so that mypy need not see it.
    try:
        return importlib.import_module(f"opentelemetry.exporter.otlp.proto.grpc.{module}")
    except ImportError:
        raise TelemetryError(_GRPC_MISSING) from None


_GRPC_MISSING: Final = (
    "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the opentelemetry-exporter-otlp-proto-grpc package; "
    "install it or use http/protobuf"
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gitdock")
    except PackageNotFoundError:
        return "unknown"


def get_tracer() -> Tracer:
    """gitdock's tracer on the global provider: a no-op until ``setup_telemetry`` sets one."""
    return trace.get_tracer(TRACER_NAME)


# --- span helpers -------------------------------------------------------------------------


def strip_credentials(url: str) -> str:
    """``url`` without user info, query or fragment, safe for a span attribute. Pure.

    ``https://user:token@host/r.git?x=1`` gives ``https://host/r.git``; the scp form
    ``git@host:org/r.git`` gives ``host:org/r.git``. Anything else is returned as is.
    """
    if "://" not in url:
        user, at, rest = url.partition("@")
        if at and "/" not in user and ":" in rest:
            return rest
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def record_error(span: Span, exc: BaseException) -> None:
    """Mark ``span`` failed by ``exc``: status ERROR, ``error.type``, and an exception event."""
    span.record_exception(exc)
    span.set_attribute(ERROR_TYPE, type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, str(exc) or type(exc).__qualname__))


def fail_span(span: Span, message: str, *, error_type: str) -> None:
    """Mark ``span`` failed without an exception (a verification refusal, a failed operation)."""
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, message))


def _result_value(result: object) -> str:
    return str(result.value) if isinstance(result, Enum) else str(result)


def _result_for(exc: BaseException) -> str:
    return "failure" if isinstance(exc, PermanentError) else "error"


class SyncSpan:
    """The running ``SYNC <project>`` span: set what the reconcile learns as it goes."""

    def __init__(self, span: Span, project: str) -> None:
        self.span = span
        self.project = project
        self.result: str | None = None

    def set_ref(self, name: str) -> None:
        self.span.set_attribute(VCS_REF_NAME, name)

    def set_revision(self, sha: str) -> None:
        self.span.set_attribute(VCS_REVISION, sha)

    def set_result(self, result: object) -> None:
        """``success``, ``failure``, ``error`` or ``skip`` (a ``state.Result`` or its value)."""
        self.result = _result_value(result)


@contextmanager
def sync_span(
    project: str,
    *,
    repository_url: str | None = None,
    ref: str | None = None,
    revision: str | None = None,
    environment: str | None = None,
    links: Sequence[SpanContext] = (),
    parent: Context | None = None,
    metrics: Metrics | None = None,
    tracer: Tracer | None = None,
    server: tuple[str, int | None] | None = None,
) -> Iterator[SyncSpan]:
    """The root span of one reconcile, current inside the block.

    A new trace unless ``parent`` is given; ``links`` point at the webhook requests that asked
    for it; ``server`` is the Docker engine's (address, port). The result defaults to
    ``success``; an escaping PermanentError makes it ``failure``, any other exception ``error``
    (recorded, then re-raised). On exit the reconcile is recorded in ``metrics`` (default:
    ``get_metrics()``).
    """
    attributes: dict[str, AttributeValue] = {
        CICD_PIPELINE_NAME: project,
        CICD_PIPELINE_ACTION: ACTION,
    }
    if repository_url:
        attributes[VCS_URL] = strip_credentials(repository_url)
    if ref:
        attributes[VCS_REF_NAME] = ref
    if revision:
        attributes[VCS_REVISION] = revision
    if environment:
        attributes[DEPLOYMENT_ENV] = environment
    if server is not None:
        attributes[SERVER_ADDRESS] = server[0]
        if server[1] is not None:
            attributes[SERVER_PORT] = server[1]
    span_links = [Link(c) for c in links if c.is_valid]
    started = time.monotonic()
    with (tracer or get_tracer()).start_as_current_span(
        f"{ACTION} {project}",
        context=parent if parent is not None else Context(),
        kind=SpanKind.INTERNAL,
        attributes=attributes,
        links=span_links,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        handle = SyncSpan(span, project)
        try:
            yield handle
        except Exception as exc:
            if handle.result is None or handle.result == "success":
                handle.result = _result_for(exc)
            record_error(span, exc)
            raise
        finally:
            result = handle.result or "success"
            span.set_attribute(CICD_PIPELINE_RESULT, result)
            if result in ("failure", "error") and span.is_recording():
                span.set_status(Status(StatusCode.ERROR, _status_description(span) or result))
            (metrics or get_metrics()).record_reconcile(handle.project, result, time.monotonic() - started)


def _status_description(span: Span) -> str | None:
    status = getattr(span, "status", None)  # SDK spans expose it; the API's Span does not
    return status.description if isinstance(status, Status) else None


@contextmanager
def _recorded_span(name: str, tracer: Tracer | None, **options: Any) -> Iterator[Span]:
    """A span current inside the block; an escaping exception is recorded on it and re-raised."""
    with (tracer or get_tracer()).start_as_current_span(
        name, record_exception=False, set_status_on_exception=False, **options
    ) as span:
        try:
            yield span
        except Exception as exc:
            record_error(span, exc)
            raise


@contextmanager
def step_span(
    step: Step | str, *, tracer: Tracer | None = None, **attributes: AttributeValue
) -> Iterator[Span]:
    """A child span for one step of the reconcile (``fetch``, ``plan``, ...), current inside.

    An escaping exception is recorded on it and re-raised.
    """
    name = _result_value(step)
    attrs: dict[str, AttributeValue] = {CICD_TASK_NAME: name, **attributes}
    with _recorded_span(name, tracer, attributes=attrs) as span:
        try:
            yield span
        except Exception as exc:
            span.set_attribute(CICD_TASK_RESULT, _result_for(exc))
            raise
        span.set_attribute(CICD_TASK_RESULT, "success")


@contextmanager
def rollback_span(project: str, failed: str, target: str, *, tracer: Tracer | None = None) -> Iterator[Span]:
    """The ``rollback`` span: a trace of its own, linked to the failed ``SYNC`` span current when
    it starts (its converge steps are its children). An escaping exception is recorded on it."""
    failed_sync = trace.get_current_span().get_span_context()
    attributes: dict[str, AttributeValue] = {
        CICD_PIPELINE_NAME: project,
        "gitdock.rollback.from": failed,
        "gitdock.rollback.to": target,
    }
    links = [Link(failed_sync)] if failed_sync.is_valid else []
    with _recorded_span("rollback", tracer, context=Context(), attributes=attributes, links=links) as span:
        yield span


def add_plan_event(span: Span, rendered: str, *, operations: int, warnings: int = 0) -> None:
    """Attach the rendered plan to ``span`` (the plan step) as the ``plan`` event."""
    span.add_event(
        PLAN_EVENT,
        {
            "gitdock.plan.rendered": rendered,
            "gitdock.plan.operations": operations,
            "gitdock.plan.warnings": warnings,
        },
    )


def split_image(reference: str) -> tuple[str, str | None, str | None]:
    """``(name, tag, digest)`` of an image reference. Pure.

    ``reg:5000/app:1@sha256:ab`` gives ``("reg:5000/app", "1", "sha256:ab")``.
    """
    name, at, digest = reference.partition("@")
    head, slash, last = name.rpartition("/")
    tag = None
    if ":" in last:
        last, _, tag = last.partition(":")
    return f"{head}{slash}{last}", tag, digest if at else None


def _image_attributes(reference: str) -> dict[str, AttributeValue]:
    name, tag, digest = split_image(reference)
    attributes: dict[str, AttributeValue] = {IMAGE_NAME: name}
    if tag:
        attributes[IMAGE_TAGS] = [tag]
    if digest:
        attributes[MANIFEST_DIGEST] = digest
    return attributes


def operation_attributes(op: Operation) -> dict[str, AttributeValue]:
    """Span attributes for one plan operation (kind, cause, resource, container.*). Pure."""
    attributes: dict[str, AttributeValue] = {
        OP_KIND: op.kind.value,
        OP_CAUSE: op.cause,
        OP_ID: op.id,
        RESOURCE: op.resource,
    }
    is_container = op.resource.startswith("service:") and op.resource.count(":") == 2
    name = op.container.name if op.container is not None else (op.target_name if is_container else None)
    if name:
        attributes[CONTAINER_NAME] = name
    if is_container and op.target:
        attributes[CONTAINER_ID] = op.target
    image = op.image or (op.container.image if op.container is not None else None)
    if image:
        attributes.update(_image_attributes(image))
    return attributes


def _operation_name(op: Operation) -> str:
    return f"{op.kind.value} {op.resource}"


@contextmanager
def operation_span(
    op: Operation, *, context: Context | None = None, tracer: Tracer | None = None
) -> Iterator[Span]:
    """A span for one plan operation run inline (``context``: the execute span's, across threads)."""
    with _recorded_span(
        _operation_name(op), tracer, context=context, attributes=operation_attributes(op)
    ) as span:
        yield span


class OperationSpans:
    """An Executor ``on_event`` subscriber turning each operation into a span. Thread-safe.

    A span starts at the ``start`` event, under the span current in the thread that emits it
    (the executor's caller, inside ``step_span("execute")``), and ends at the final event. A
    skipped operation gets a zero-length span. Each final event also counts the operation in
    ``metrics``. ``then`` receives every event afterwards (the progress display). A build's
    output lines (``output``) become ``build.output`` events on its BuildImage span, then go to
    ``then_output``.
    """

    def __init__(
        self,
        *,
        then: Callable[[ExecEvent], None] | None = None,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
        then_output: Callable[[Operation, str], None] | None = None,
    ) -> None:
        self._tracer = tracer or get_tracer()
        self._metrics = metrics
        self._then = then
        self._then_output = then_output
        self._spans: dict[int, Span] = {}
        self._lock = threading.Lock()

    def __call__(self, event: ExecEvent) -> None:
        try:
            self._record(event)
        except Exception:  # telemetry must never break an apply
            log.warning("could not record a span for %s", event.op.resource, exc_info=True)
        if self._then is not None:
            self._then(event)

    def output(self, op: Operation, text: str) -> None:
        with self._lock:
            span = self._spans.get(op.id)
        if span is not None:
            span.add_event("build.output", {"line": text})
        if self._then_output is not None:
            self._then_output(op, text)

    def _record(self, event: ExecEvent) -> None:
        op = event.op
        if event.phase == "start":
            span = self._tracer.start_span(_operation_name(op), attributes=operation_attributes(op))
            with self._lock:
                self._spans[op.id] = span
            return
        with self._lock:
            started = self._spans.pop(op.id) if op.id in self._spans else None
        # An operation skipped before it started gets a zero-length span.
        span = started or self._tracer.start_span(_operation_name(op), attributes=operation_attributes(op))
        span.set_attribute(OP_RESULT, event.phase)
        if event.container_id:
            span.set_attribute(CONTAINER_ID, event.container_id)
        if event.phase == "failed":
            error_type = getattr(event, "error_type", None) or "OperationFailed"
            fail_span(span, event.error or "failed", error_type=str(error_type))
        elif event.phase == "skipped" and event.error:
            span.set_attribute(OP_ERROR, event.error)
        span.end()
        (self._metrics or get_metrics()).count_operation(op.kind.value, event.phase)


class ImageSpan:
    """The running span of one image's resolve/verify; ``fail_verification`` marks a refusal."""

    def __init__(self, span: Span, metrics: Metrics | None) -> None:
        self.span = span
        self._metrics = metrics

    def set_digest(self, digest: str) -> None:
        self.span.set_attribute(MANIFEST_DIGEST, digest)

    def fail_verification(self, reason: str, message: str) -> None:
        """The image is refused: ERROR status with ``message``; ``reason`` is low-cardinality."""
        self.span.set_attribute(VERIFY_REASON, reason)
        fail_span(self.span, message, error_type="verification_failed")
        (self._metrics or get_metrics()).count_verification_failure(reason)


@contextmanager
def image_span(
    reference: str,
    *,
    service: str | None = None,
    metrics: Metrics | None = None,
    tracer: Tracer | None = None,
) -> Iterator[ImageSpan]:
    """A span for resolving and verifying one image, named ``verify <reference>``."""
    attributes = _image_attributes(reference)
    if service:
        attributes["gitdock.service"] = service
    with _recorded_span(f"verify {reference}", tracer, attributes=attributes) as span:
        yield ImageSpan(span, metrics)


# --- webhooks: W3C trace context ------------------------------------------------------------

_propagator = TraceContextTextMapPropagator()


def extract_traceparent(headers: Mapping[str, str]) -> Context | None:
    """The sender's trace context from ``traceparent``/``tracestate`` headers, or None.

    Header names are matched case-insensitively; a malformed ``traceparent`` is ignored.
    """
    carrier = {k.lower(): v for k, v in headers.items()}
    if "traceparent" not in carrier:
        return None
    context = _propagator.extract(carrier)
    return context if trace.get_current_span(context).get_span_context().is_valid else None


@contextmanager
def webhook_span(
    headers: Mapping[str, str],
    *,
    route: str = "/hooks",
    method: str = "POST",
    tracer: Tracer | None = None,
) -> Iterator[Span]:
    """The server span of one webhook request, continuing the sender's ``traceparent`` if any.

    Keep ``span.get_span_context()`` with the debounced trigger and pass it to ``sync_span``
    as a link: one reconcile may answer several requests.
    """
    parent = extract_traceparent(headers)
    with (tracer or get_tracer()).start_as_current_span(
        f"{method} {route}",
        context=parent if parent is not None else Context(),
        kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "http.route": route},
    ) as span:
        yield span


# --- log correlation ------------------------------------------------------------------------


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` (hex, empty outside a span) and ``trace_context`` to records.

    Attach it to a handler (``install_log_correlation``): logger filters do not see records
    propagated from child loggers.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            trace_id, span_id = format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
            suffix = f" trace_id={trace_id} span_id={span_id}"
        else:
            trace_id = span_id = suffix = ""
        record.__dict__.update(trace_id=trace_id, span_id=span_id, trace_context=suffix)
        return True


def install_log_correlation(handler: logging.Handler, *, set_format: bool = True) -> None:
    """Make ``handler``'s lines carry the current trace and span ids (``LOG_FORMAT``)."""
    if not any(isinstance(f, TraceContextFilter) for f in handler.filters):
        handler.addFilter(TraceContextFilter())
    if set_format:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))


def add_drift_events(items: Iterable[DriftItem]) -> None:
    """One ``drift.item`` event per drifting field, on the current span (the reconcile's)."""
    span = trace.get_current_span()
    for item in items:
        span.add_event(
            "drift.item",
            {
                "resource": item.resource,
                "field": item.field.value,
                "kind": item.kind.value,
                "what": item.what,
            },
        )


def add_policy_events(span: Span, violations: Sequence[tuple[str, str, str]]) -> None:
    """The policy step's outcome on ``span``: the violation count, and one ``policy.violation``
    event per (field path, rule, message)."""
    span.set_attribute(POLICY_VIOLATIONS, len(violations))
    for path, rule, message in violations:
        span.add_event("policy.violation", {"field": path, "rule": rule, "message": message})


def converge_hooks(
    *,
    metrics: Metrics | None = None,
    then: Callable[[ExecEvent], None] | None = None,
    then_output: Callable[[Operation, str], None] | None = None,
) -> ConvergeHooks:
    """Hooks for ``runtime.converge.converge`` that trace one reconcile's steps.

    Step spans (verify, observe, plan, execute), one span per image under verify, the rendered
    plan as an event on the plan span, and one span per operation under execute (a
    BuildImage's carries the build's output as events). ``then`` still receives every executor
    event and ``then_output`` every build output line (the progress display).
    """
    from gitdock.runtime.converge import ConvergeHooks

    def on_plan(plan: Plan) -> None:
        span = trace.get_current_span()
        add_plan_event(span, plan.render(), operations=len(plan.operations), warnings=len(plan.warnings))

    spans = OperationSpans(then=then, metrics=metrics, then_output=then_output)
    return ConvergeHooks(
        step=step_span,
        on_plan=on_plan,
        on_event=spans,
        on_output=spans.output,
        image_hook=lambda reference: image_span(reference, metrics=metrics),
    )
