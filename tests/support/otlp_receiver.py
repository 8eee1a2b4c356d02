"""A real OTLP/HTTP receiver on 127.0.0.1 with a random port, decoding the real protobuf.

    with OTLPReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        ...
        spans = receiver.wait_for_spans(3)

It accepts ``POST /v1/traces`` and ``POST /v1/metrics`` (``application/x-protobuf``, gzip or
deflate), keeps what it decoded for assertions, and is thread-safe. ``delay`` makes every
answer wait that long (a slow collector); ``status`` answers with that HTTP status instead.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as PbStatus

__all__ = ["OTLPReceiver", "ReceivedEvent", "ReceivedMetric", "ReceivedSpan"]

STATUS_UNSET, STATUS_OK, STATUS_ERROR = (
    PbStatus.STATUS_CODE_UNSET,
    PbStatus.STATUS_CODE_OK,
    PbStatus.STATUS_CODE_ERROR,
)


@dataclass(frozen=True)
class ReceivedEvent:
    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span. Ids are lowercase hex; ``parent_span_id`` is "" for a root."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: tuple[ReceivedEvent, ...]
    links: tuple[tuple[str, str], ...]  # (trace_id, span_id)
    status_code: int
    status_message: str
    resource: dict[str, Any]
    scope: str
    start_ns: int = 0  # Unix epoch nanoseconds, as sent
    end_ns: int = 0


@dataclass(frozen=True)
class ReceivedMetric:
    """One decoded metric: its kind (``sum``, ``gauge``, ``histogram``, ...) and data points."""

    name: str
    unit: str
    kind: str
    points: tuple[tuple[dict[str, Any], float], ...]  # (attributes, value; a histogram's count)
    resource: dict[str, Any]


def decode_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as a plain Python value (lists for arrays, dicts for kvlists)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [decode_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    return getattr(value, which)


def decode_attributes(items: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: decode_value(kv.value) for kv in items}


def _decode_span(span: PbSpan, resource: dict[str, Any], scope: str) -> ReceivedSpan:
    return ReceivedSpan(
        name=span.name,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        kind=span.kind,
        attributes=decode_attributes(span.attributes),
        events=tuple(ReceivedEvent(e.name, decode_attributes(e.attributes)) for e in span.events),
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
        status_code=span.status.code,
        status_message=span.status.message,
        resource=resource,
        scope=scope,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
    )


class OTLPReceiver:
    """A pytest-friendly context manager around a threaded HTTP server speaking OTLP/HTTP."""

    def __init__(self, *, delay: float = 0.0, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[ReceivedMetric] = []
        self.requests: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a delayed answer must not hold up __exit__
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def metrics(self) -> list[ReceivedMetric]:
        with self._lock:
            return list(self._metrics)

    def wait_for_spans(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """At least ``count`` spans; AssertionError naming what arrived if they do not in time."""
        self._wait(lambda: len(self._spans) >= count, timeout, f"{count} spans")
        return self.spans()

    def wait_for_metric(self, name: str, timeout: float = 10.0) -> list[ReceivedMetric]:
        """Every received metric named ``name``, waiting until there is one."""
        self._wait(lambda: any(m.name == name for m in self._metrics), timeout, f"metric {name}")
        return [m for m in self.metrics() if m.name == name]

    def _wait(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        with self._lock:
            if not self._lock.wait_for(done, timeout):
                spans = sorted({s.name for s in self._spans})[:20]
                metrics = sorted({m.name for m in self._metrics})
                raise AssertionError(
                    f"no {what} within {timeout}s; got {len(self._spans)} spans named like {spans}, "
                    f"metrics {metrics}"
                )

    # -- server side --------------------------------------------------------------------------

    def _store(self, path: str, body: bytes) -> bytes:
        if path == "/v1/traces":
            trace_request = ExportTraceServiceRequest.FromString(body)
            spans = [
                _decode_span(span, decode_attributes(rs.resource.attributes), ss.scope.name)
                for rs in trace_request.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]
            with self._lock:
                self._spans.extend(spans)
                self._lock.notify_all()
            return bytes(ExportTraceServiceResponse().SerializeToString())
        metrics_request = ExportMetricsServiceRequest.FromString(body)
        received = []
        for rm in metrics_request.resource_metrics:
            resource = decode_attributes(rm.resource.attributes)
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data") or ""
                    points: list[tuple[dict[str, Any], float]] = []
                    if kind in ("sum", "gauge"):
                        number_points = getattr(metric, kind).data_points
                        for p in number_points:
                            value = p.as_double if p.WhichOneof("value") == "as_double" else p.as_int
                            points.append((decode_attributes(p.attributes), float(value)))
                    elif kind == "histogram":
                        points += [
                            (decode_attributes(p.attributes), float(p.count))
                            for p in metric.histogram.data_points
                        ]
                    received.append(ReceivedMetric(metric.name, metric.unit, kind, tuple(points), resource))
        with self._lock:
            self._metrics.extend(received)
            self._lock.notify_all()
        return bytes(ExportMetricsServiceResponse().SerializeToString())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with receiver._lock:
                    receiver.requests[self.path] = receiver.requests.get(self.path, 0) + 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.delay:
                    time.sleep(receiver.delay)
                if self.path not in ("/v1/traces", "/v1/metrics"):
                    self._answer(404, b"")
                    return
                if receiver.status != 200:
                    self._answer(receiver.status, b"")
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                try:
                    answer = receiver._store(self.path, body)
                except Exception as exc:  # a body that is not OTLP protobuf is the sender's bug: 400
                    self._answer(400, str(exc).encode())
                    return
                self._answer(200, answer)

            def _answer(self, status: int, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-protobuf")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the exporter gave up waiting and closed the connection

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
