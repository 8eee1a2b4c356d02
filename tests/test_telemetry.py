"""Telemetry: span helpers on the in-memory exporter, configuration, and real OTLP export."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from gitdock.agent.metrics import Metrics, create_metrics
from gitdock.agent.telemetry import (
    ExporterKind,
    OperationSpans,
    Protocol,
    Step,
    TelemetryConfig,
    TelemetryError,
    TraceContextFilter,
    add_plan_event,
    extract_traceparent,
    image_span,
    install_log_correlation,
    operation_attributes,
    operation_span,
    setup_telemetry,
    split_image,
    step_span,
    strip_credentials,
    sync_span,
    webhook_span,
)
from gitdock.runtime.docker import DockerUnavailable
from gitdock.runtime.execute import ExecEvent
from gitdock.runtime.plan import Operation, OpKind
from gitdock.runtime.trust.errors import TrustError
from support.otlp_receiver import STATUS_ERROR, OTLPReceiver
from support.spans import capture_spans, find_span, render_tree, span_tree

ROOT = Path(__file__).resolve().parents[1]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def telemetry_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(("OtelBatch", "OtelPeriodic"))}


# --- credentials, images ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:s3cret@git.example.com/org/app.git", "https://git.example.com/org/app.git"),
        ("https://x-access-token:ghp_abc@github.com/org/app", "https://github.com/org/app"),
        ("https://ghp_tokenonly@github.com/org/app.git", "https://github.com/org/app.git"),
        (
            "https://git.example.com:8443/org/app.git?private_token=abc#frag",
            "https://git.example.com:8443/org/app.git",
        ),
        ("ssh://git:pw@[::1]:2222/srv/app.git", "ssh://[::1]:2222/srv/app.git"),
        ("git@github.com:org/app.git", "github.com:org/app.git"),
        ("https://github.com/org/app.git", "https://github.com/org/app.git"),
        ("/srv/git/app.git", "/srv/git/app.git"),
    ],
)
def test_strip_credentials_removes_user_info_and_query(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


def test_split_image_separates_registry_port_tag_and_digest() -> None:
    digest = "sha256:" + "a" * 64
    assert split_image(f"reg:5000/team/app:1.2@{digest}") == ("reg:5000/team/app", "1.2", digest)
    assert split_image("reg:5000/team/app") == ("reg:5000/team/app", None, None)
    assert split_image("busybox") == ("busybox", None, None)


# --- the SYNC root and its children ---------------------------------------------------------


def test_sync_span_carries_cicd_vcs_and_environment_attributes() -> None:
    with (
        capture_spans() as exporter,
        sync_span(
            "webapp",
            repository_url="https://deploy:tok3n@git.example.com/org/webapp.git",
            ref="main",
            environment="production",
            metrics=Metrics.noop(),
        ) as sync,
    ):
        sync.set_revision("a" * 40)
    span = find_span(exporter.get_finished_spans(), "SYNC webapp")
    assert span.parent is None
    assert dict(span.attributes or {}) == {
        "cicd.pipeline.name": "webapp",
        "cicd.pipeline.action.name": "SYNC",
        "cicd.pipeline.result": "success",
        "vcs.repository.url.full": "https://git.example.com/org/webapp.git",
        "vcs.ref.head.name": "main",
        "vcs.ref.head.revision": "a" * 40,
        "deployment.environment.name": "production",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_sync_span_is_a_new_trace_even_inside_another_span() -> None:
    outer_span = trace.get_tracer("t").start_as_current_span("outer")
    with capture_spans() as exporter, outer_span, sync_span("p", metrics=Metrics.noop()):
        pass
    sync = find_span(exporter.get_finished_spans(), "SYNC p")
    outer = find_span(exporter.get_finished_spans(), "outer")
    assert sync.parent is None
    assert sync.context.trace_id != outer.context.trace_id


def test_sync_span_result_is_failure_for_a_permanent_error_with_the_exception_recorded() -> None:
    with capture_spans() as exporter, pytest.raises(TrustError), sync_span("p", metrics=Metrics.noop()):
        raise TrustError("image web: no valid signature")
    span = find_span(exporter.get_finished_spans(), "SYNC p")
    attributes = span.attributes or {}
    assert attributes["cicd.pipeline.result"] == "failure"
    assert attributes["error.type"] == "TrustError"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "image web: no valid signature"
    assert [e.name for e in span.events] == ["exception"]


def test_sync_span_result_is_error_for_a_transient_error() -> None:
    with (
        capture_spans() as exporter,
        pytest.raises(DockerUnavailable),
        sync_span("p", metrics=Metrics.noop()),
    ):
        raise DockerUnavailable("dockerd: connection refused")
    span = find_span(exporter.get_finished_spans(), "SYNC p")
    assert (span.attributes or {})["cicd.pipeline.result"] == "error"
    assert span.status.status_code is StatusCode.ERROR


def test_sync_span_keeps_an_explicit_skip_or_failure_result() -> None:
    with capture_spans() as exporter:
        with sync_span("skipped", metrics=Metrics.noop()) as sync:
            sync.set_result("skip")
        with sync_span("failed", metrics=Metrics.noop()) as sync:
            sync.set_result("failure")
    spans = exporter.get_finished_spans()
    skipped, failed = find_span(spans, "SYNC skipped"), find_span(spans, "SYNC failed")
    assert (skipped.attributes or {})["cicd.pipeline.result"] == "skip"
    assert skipped.status.status_code is StatusCode.UNSET
    assert (failed.attributes or {})["cicd.pipeline.result"] == "failure"
    assert failed.status.status_code is StatusCode.ERROR


def test_sync_span_records_the_reconcile_in_metrics() -> None:
    metrics, provider = create_metrics()
    try:
        with capture_spans(), sync_span("webapp", metrics=metrics) as sync:
            sync.set_result("skip")
        text = metrics.render_prometheus()
    finally:
        provider.shutdown()
    assert 'gitdock_reconciles_total{project="webapp",result="skip"} 1' in text
    assert 'gitdock_reconcile_duration_seconds_count{project="webapp",result="skip"} 1' in text


def test_step_spans_nest_under_sync_and_record_errors() -> None:
    with (
        capture_spans() as exporter,
        pytest.raises(DockerUnavailable),
        sync_span("p", metrics=Metrics.noop()),
    ):
        for step in (Step.FETCH, Step.LOAD, Step.VERIFY):
            with step_span(step):
                pass
        with step_span(Step.OBSERVE):
            raise DockerUnavailable("dockerd: connection refused")
    spans = exporter.get_finished_spans()
    assert render_tree(spans) == textwrap.dedent("""\
        SYNC p
          fetch
          load
          verify
          observe
    """)
    observe = find_span(spans, "observe")
    assert observe.status.status_code is StatusCode.ERROR
    assert (observe.attributes or {})["error.type"] == "DockerUnavailable"
    assert (observe.attributes or {})["cicd.pipeline.task.run.result"] == "error"
    assert (find_span(spans, "fetch").attributes or {})["cicd.pipeline.task.name"] == "fetch"


def test_plan_span_carries_the_rendered_plan_as_an_event() -> None:
    rendered = "[] -> #1 network:default, CreateNetwork, not found"
    with capture_spans() as exporter, sync_span("p", metrics=Metrics.noop()), step_span(Step.PLAN) as span:
        add_plan_event(span, rendered, operations=1)
    (event,) = find_span(exporter.get_finished_spans(), "plan").events
    assert event.name == "plan"
    assert dict(event.attributes or {}) == {
        "gitdock.plan.rendered": rendered,
        "gitdock.plan.operations": 1,
        "gitdock.plan.warnings": 0,
    }


def test_image_span_marks_a_verification_failure_with_its_reason() -> None:
    digest = "sha256:" + "b" * 64
    metrics, provider = create_metrics()
    try:
        with capture_spans() as exporter, sync_span("p", metrics=metrics), step_span(Step.VERIFY):
            with image_span("reg:5000/app:1", service="web", metrics=metrics) as image:
                image.set_digest(digest)
                image.fail_verification("no_signature", "reg:5000/app:1: no signature found")
            with image_span("reg:5000/db:2", metrics=metrics):
                pass
        text = metrics.render_prometheus()
    finally:
        provider.shutdown()
    spans = exporter.get_finished_spans()
    (root,) = span_tree(spans)
    assert root.shape() == (
        "SYNC p",
        [("verify", [("verify reg:5000/app:1", []), ("verify reg:5000/db:2", [])])],
    )
    bad = find_span(spans, "verify reg:5000/app:1")
    assert bad.status.status_code is StatusCode.ERROR
    assert bad.status.description == "reg:5000/app:1: no signature found"
    assert dict(bad.attributes or {}) == {
        "container.image.name": "reg:5000/app",
        "container.image.tags": ("1",),
        "gitdock.service": "web",
        "oci.manifest.digest": digest,
        "gitdock.verification.reason": "no_signature",
        "error.type": "verification_failed",
    }
    assert find_span(spans, "verify reg:5000/db:2").status.status_code is StatusCode.UNSET
    assert 'gitdock_verification_failures_total{reason="no_signature"} 1' in text


# --- operations ---------------------------------------------------------------------------


def op(
    op_id: int,
    kind: OpKind,
    resource: str,
    cause: str = "not found",
    deps: tuple[int, ...] = (),
    **kw: object,
) -> Operation:
    return Operation(op_id, kind, resource, cause, deps, **kw)  # type: ignore[arg-type]


def test_operation_attributes_name_the_container_image_and_digest() -> None:
    digest = "sha256:" + "c" * 64
    start = op(
        3, OpKind.START_CONTAINER, "service:web:1", "exited (137)", target="cid1", target_name="demo-web-1"
    )
    assert operation_attributes(start) == {
        "gitdock.operation.kind": "StartContainer",
        "gitdock.operation.cause": "exited (137)",
        "gitdock.operation.id": 3,
        "gitdock.resource": "service:web:1",
        "container.name": "demo-web-1",
        "container.id": "cid1",
    }
    pull = op(1, OpKind.PULL_IMAGE, "image:reg/app:1", "not present locally", image=f"reg/app:1@{digest}")
    assert operation_attributes(pull) == {
        "gitdock.operation.kind": "PullImage",
        "gitdock.operation.cause": "not present locally",
        "gitdock.operation.id": 1,
        "gitdock.resource": "image:reg/app:1",
        "container.image.name": "reg/app",
        "container.image.tags": ["1"],
        "oci.manifest.digest": digest,
    }
    network = op(2, OpKind.REMOVE_NETWORK, "network:old", "orphan", target="nid", target_name="demo_old")
    assert "container.id" not in operation_attributes(network)
    assert "container.name" not in operation_attributes(network)


def test_operation_spans_from_executor_events_nest_under_execute_across_threads() -> None:
    create = op(1, OpKind.CREATE_NETWORK, "network:default")
    start = op(
        2, OpKind.START_CONTAINER, "service:web:1", "exited (1)", (1,), target="cid", target_name="d-web-1"
    )
    wait = op(3, OpKind.WAIT_HEALTHY, "service:web", "service_healthy required by api", (2,), service="web")
    skipped = op(4, OpKind.REMOVE_CONTAINER, "service:api:1", "orphan", (3,), target="cid2")
    metrics, provider = create_metrics()
    seen: list[str] = []
    recorder = OperationSpans(then=lambda e: seen.append(e.phase), metrics=metrics)
    try:
        with capture_spans() as exporter, sync_span("p", metrics=Metrics.noop()), step_span(Step.EXECUTE):
            recorder(ExecEvent(create, "start"))
            recorder(ExecEvent(start, "start"))

            # Final events come from the executor's worker threads.
            def finish_two() -> None:
                recorder(ExecEvent(create, "done", 0.1))
                recorder(ExecEvent(start, "done"))

            worker = threading.Thread(target=finish_two)
            worker.start()
            worker.join()
            recorder(ExecEvent(wait, "start"))
            failing = threading.Thread(
                target=lambda: recorder(ExecEvent(wait, "failed", 2.0, "service web is unhealthy"))
            )
            failing.start()
            failing.join()
            recorder(ExecEvent(skipped, "skipped", 0.0, "a dependency failed"))
        text = metrics.render_prometheus()
    finally:
        provider.shutdown()
    spans = exporter.get_finished_spans()
    (root,) = span_tree(spans)
    assert root.child("execute").shape()[1] == [
        ("CreateNetwork network:default", []),
        ("StartContainer service:web:1", []),
        ("WaitHealthy service:web", []),
        ("RemoveContainer service:api:1", []),
    ]
    failed = find_span(spans, "WaitHealthy service:web")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "service web is unhealthy"
    assert (failed.attributes or {})["gitdock.operation.result"] == "failed"
    removed = find_span(spans, "RemoveContainer service:api:1")
    assert (removed.attributes or {})["gitdock.operation.result"] == "skipped"
    assert (removed.attributes or {})["gitdock.operation.error"] == "a dependency failed"
    assert seen == ["start", "start", "done", "done", "start", "failed", "skipped"]
    assert 'gitdock_operations_total{kind="StartContainer",result="done"} 1' in text
    assert 'gitdock_operations_total{kind="WaitHealthy",result="failed"} 1' in text


def test_operation_span_takes_an_explicit_parent_context_for_pool_threads() -> None:
    from opentelemetry import context

    action = op(1, OpKind.CREATE_VOLUME, "volume:data")
    with capture_spans() as exporter, sync_span("p", metrics=Metrics.noop()), step_span(Step.EXECUTE):
        parent = context.get_current()

        def run() -> None:
            with pytest.raises(DockerUnavailable), operation_span(action, context=parent):
                raise DockerUnavailable("gone")

        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    spans = exporter.get_finished_spans()
    assert render_tree(spans) == "SYNC p\n  execute\n    CreateVolume volume:data\n"
    assert find_span(spans, "CreateVolume volume:data").status.status_code is StatusCode.ERROR


# --- webhooks and trace context ---------------------------------------------------------------


def test_extract_traceparent_reads_w3c_headers_in_any_case() -> None:
    context = extract_traceparent({"TraceParent": TRACEPARENT, "Tracestate": "vendor=1"})
    assert context is not None
    parent = trace.get_current_span(context).get_span_context()
    assert format(parent.trace_id, "032x") == TRACE_ID
    assert format(parent.span_id, "016x") == PARENT_ID
    assert parent.is_remote
    assert parent.trace_state.get("vendor") == "1"


@pytest.mark.parametrize(
    "headers", [{}, {"traceparent": "00-garbage-01"}, {"traceparent": f"00-{'0' * 32}-{PARENT_ID}-01"}]
)
def test_extract_traceparent_ignores_missing_or_malformed_headers(headers: dict[str, str]) -> None:
    assert extract_traceparent(headers) is None


def test_webhook_request_continues_the_senders_trace_and_the_sync_links_to_it() -> None:
    with capture_spans() as exporter:
        with webhook_span({"traceparent": TRACEPARENT}, route="/hooks/github") as request:
            trigger = request.get_span_context()
        with sync_span("p", links=[trigger], metrics=Metrics.noop()):
            pass
    spans = exporter.get_finished_spans()
    hook = find_span(spans, "POST /hooks/github")
    assert hook.kind is SpanKind.SERVER
    assert format(hook.context.trace_id, "032x") == TRACE_ID
    assert hook.parent is not None and format(hook.parent.span_id, "016x") == PARENT_ID
    sync = find_span(spans, "SYNC p")
    assert [link.context for link in sync.links] == [hook.context]
    assert sync.context.trace_id != hook.context.trace_id


def test_webhook_without_traceparent_starts_a_new_trace() -> None:
    with capture_spans() as exporter, webhook_span({"content-type": "application/json"}):
        pass
    (hook,) = exporter.get_finished_spans()
    assert hook.parent is None


def test_sync_span_continues_a_given_parent_context() -> None:
    parent = extract_traceparent({"traceparent": TRACEPARENT})
    with capture_spans() as exporter, sync_span("p", parent=parent, metrics=Metrics.noop()):
        pass
    (sync,) = exporter.get_finished_spans()
    assert format(sync.context.trace_id, "032x") == TRACE_ID


# --- log correlation ----------------------------------------------------------------------------


def test_log_lines_carry_trace_and_span_ids_inside_a_span_only() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    install_log_correlation(handler)
    logger = logging.getLogger("gitdock.test.correlation")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("outside")
        with capture_spans() as exporter, sync_span("p", metrics=Metrics.noop()):
            logging.getLogger("gitdock.test.correlation.child").info("inside")
        (span,) = exporter.get_finished_spans()
    finally:
        logger.removeHandler(handler)
    outside, inside = stream.getvalue().splitlines()
    assert outside.endswith("gitdock.test.correlation: outside")
    ids = f"trace_id={span.context.trace_id:032x} span_id={span.context.span_id:016x}"
    assert inside.endswith(f"gitdock.test.correlation.child: inside {ids}")


def test_trace_context_filter_sets_empty_ids_outside_a_span() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert TraceContextFilter().filter(record)
    assert (record.__dict__["trace_id"], record.__dict__["span_id"], record.__dict__["trace_context"]) == (
        "",
        "",
        "",
    )


# --- configuration -----------------------------------------------------------------------------


def test_resolve_without_endpoint_or_exporter_exports_nothing() -> None:
    config = TelemetryConfig().resolve({})
    assert config.enabled
    assert config.traces_exporter is ExporterKind.NONE
    assert config.metrics_exporter is ExporterKind.NONE
    assert config.service_name == "gitdock"


def test_resolve_reads_the_standard_otel_variables() -> None:
    config = TelemetryConfig().resolve(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
            "OTEL_SERVICE_NAME": "gitdock-edge",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging,host.name=edge%2C1",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1500",
            "OTEL_BSP_MAX_QUEUE_SIZE": "100",
        }
    )
    assert config.traces_exporter is ExporterKind.OTLP
    assert config.metrics_exporter is ExporterKind.OTLP
    assert config.signal_endpoint("traces") == "http://collector:4318/v1/traces"
    assert config.signal_endpoint("metrics") == "http://collector:4318/v1/metrics"
    assert config.service_name == "gitdock-edge"
    assert config.environment == "staging"
    assert config.resource_attributes == {"deployment.environment.name": "staging", "host.name": "edge,1"}
    assert config.export_timeout == 1.5
    assert config.max_queue_size == 100


def test_resolve_uses_a_signal_endpoint_verbatim_and_grpc_without_path() -> None:
    config = TelemetryConfig().resolve(
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://tempo:4318/otlp/v1/traces"}
    )
    assert config.traces_exporter is ExporterKind.OTLP
    assert config.signal_endpoint("traces") == "http://tempo:4318/otlp/v1/traces"
    grpc = TelemetryConfig().resolve(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    )
    assert grpc.protocol is Protocol.GRPC
    assert grpc.signal_endpoint("traces") == "http://c:4317"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("otlp", ExporterKind.OTLP),
        ("console", ExporterKind.CONSOLE),
        ("none", ExporterKind.NONE),
        ("OTLP", ExporterKind.OTLP),
    ],
)
def test_otel_traces_exporter_picks_the_exporter(value: str, expected: ExporterKind) -> None:
    env = {"OTEL_TRACES_EXPORTER": value, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    assert TelemetryConfig().resolve(env).traces_exporter is expected


def test_otel_traces_exporter_rejects_an_unknown_exporter_by_name() -> None:
    with pytest.raises(
        TelemetryError, match="OTEL_TRACES_EXPORTER: 'jaeger' is not one of otlp, console, none"
    ):
        TelemetryConfig().resolve({"OTEL_TRACES_EXPORTER": "jaeger"})


def test_otel_metrics_exporter_prometheus_means_no_push() -> None:
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}
    config = TelemetryConfig().resolve(env)
    assert config.metrics_exporter is ExporterKind.NONE
    assert config.traces_exporter is ExporterKind.OTLP


def test_explicit_config_fields_win_over_the_environment() -> None:
    config = TelemetryConfig(
        service_name="from-config", endpoint="http://cfg:4318", traces_exporter=ExporterKind.CONSOLE
    )
    resolved = config.resolve(
        {
            "OTEL_SERVICE_NAME": "from-env",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318",
            "OTEL_TRACES_EXPORTER": "none",
        }
    )
    assert resolved.service_name == "from-config"
    assert resolved.endpoint == "http://cfg:4318"
    assert resolved.traces_exporter is ExporterKind.CONSOLE


def test_otel_sdk_disabled_turns_everything_off_without_threads() -> None:
    before = telemetry_threads()
    telemetry = setup_telemetry(
        TelemetryConfig(endpoint="http://127.0.0.1:9"), env={"OTEL_SDK_DISABLED": "true"}, set_global=False
    )
    assert not telemetry.config.enabled
    assert telemetry.tracer_provider is None and telemetry.meter_provider is None
    assert telemetry.metrics.is_noop and telemetry.metrics.render_prometheus() == ""
    assert not telemetry.tracer().start_span("x").is_recording()
    assert telemetry_threads() == before
    assert telemetry.shutdown()


def test_no_exporter_keeps_prometheus_metrics_without_threads() -> None:
    before = telemetry_threads()
    telemetry = setup_telemetry(env={}, set_global=False)
    try:
        assert telemetry.tracer_provider is None
        telemetry.metrics.count_operation("CreateContainer")
        assert (
            'gitdock_operations_total{kind="CreateContainer",result="done"} 1'
            in telemetry.metrics.render_prometheus()
        )
        assert telemetry_threads() == before
    finally:
        telemetry.shutdown()


def test_grpc_without_its_package_is_a_clear_error() -> None:
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("opentelemetry-exporter-otlp-proto-grpc is installed")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    with pytest.raises(TelemetryError, match="opentelemetry-exporter-otlp-proto-grpc"):
        setup_telemetry(env=env, set_global=False)


# --- the real OTLP exporter -----------------------------------------------------------------------

SUBPROCESS_SCRIPT = """
from gitdock.agent.metrics import get_metrics
from gitdock.agent.telemetry import (
    Step, add_plan_event, setup_telemetry, shutdown_telemetry, step_span, sync_span,
)

setup_telemetry()
url = "https://bot:t0ken@git.example.com/org/webapp.git"
with sync_span("webapp", repository_url=url, ref="main") as sync:
    with step_span(Step.FETCH):
        sync.set_revision("f" * 40)
    with step_span(Step.PLAN) as plan:
        add_plan_event(plan, "[] -> #1 network:default, CreateNetwork, not found", operations=1)
get_metrics().set_drift("webapp", 1)
assert shutdown_telemetry(5.0), "shutdown did not finish in time"
"""


def run_python(script: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", script],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_otlp_exporter_configured_by_env_delivers_traces_and_metrics() -> None:
    with OTLPReceiver() as receiver:
        proc = run_python(
            SUBPROCESS_SCRIPT,
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_SERVICE_NAME": "gitdock-e2e",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=staging",
            },
        )
        assert proc.returncode == 0, proc.stderr
        spans = {s.name: s for s in receiver.wait_for_spans(3)}
        drift = receiver.wait_for_metric("gitdock.drift.items")
    assert set(spans) == {"SYNC webapp", "fetch", "plan"}
    root = spans["SYNC webapp"]
    assert root.parent_span_id == ""
    assert spans["fetch"].parent_span_id == root.span_id
    assert spans["plan"].parent_span_id == root.span_id
    assert {s.trace_id for s in spans.values()} == {root.trace_id}
    assert root.attributes["vcs.repository.url.full"] == "https://git.example.com/org/webapp.git"
    assert root.attributes["vcs.ref.head.revision"] == "f" * 40
    assert root.attributes["cicd.pipeline.result"] == "success"
    assert root.resource["service.name"] == "gitdock-e2e"
    assert root.resource["deployment.environment.name"] == "staging"
    assert root.scope == "gitdock"
    assert [e.name for e in spans["plan"].events] == ["plan"]
    assert spans["plan"].events[0].attributes["gitdock.plan.operations"] == 1
    assert drift[0].points == (({"project": "webapp"}, 1.0),)
    assert "t0ken" not in json.dumps([s.attributes for s in spans.values()])


def test_otlp_receiver_records_error_status_over_the_wire() -> None:
    with OTLPReceiver() as receiver:
        config = TelemetryConfig(endpoint=receiver.endpoint, metrics=False)
        telemetry = setup_telemetry(config, env={}, set_global=False)
        with (
            pytest.raises(DockerUnavailable),
            sync_span("p", tracer=telemetry.tracer(), metrics=Metrics.noop()),
        ):
            raise DockerUnavailable("dockerd: connection refused")
        assert telemetry.shutdown(5.0)
        (span,) = receiver.wait_for_spans(1)
    assert span.status_code == STATUS_ERROR
    assert span.status_message == "dockerd: connection refused"
    assert span.attributes["error.type"] == "DockerUnavailable"
    assert [e.name for e in span.events] == ["exception"]


def test_console_exporter_from_env_writes_spans_to_stdout() -> None:
    script = textwrap.dedent("""\
        from gitdock.agent.telemetry import setup_telemetry, shutdown_telemetry, sync_span
        setup_telemetry()
        with sync_span("p"):
            pass
        shutdown_telemetry()
    """)
    proc = run_python(script, {"OTEL_TRACES_EXPORTER": "console"})
    assert proc.returncode == 0, proc.stderr
    assert '"name": "SYNC p"' in proc.stdout


# --- a dead or slow collector -----------------------------------------------------------------------

EXPORT_TIMEOUT = 0.5


@pytest.fixture
def slow_receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver(delay=5.0) as receiver:
        yield receiver


@pytest.mark.parametrize("collector", ["nothing listening", "answers after 5 s"])
def test_a_dead_or_slow_collector_never_blocks_or_raises(collector: str, slow_receiver: OTLPReceiver) -> None:
    """Ending spans, flushing and shutting down neither raise nor wait for the collector's answer:
    the slow receiver stores what it got only after answering (5 s, ten export timeouts), so it
    has stored nothing when shutdown returns — though the exporter did send to it."""
    endpoint = (
        f"http://127.0.0.1:{free_port()}" if collector == "nothing listening" else slow_receiver.endpoint
    )
    config = TelemetryConfig(endpoint=endpoint, export_timeout=EXPORT_TIMEOUT, max_queue_size=256)
    telemetry = setup_telemetry(config, env={}, set_global=False)
    tracer = telemetry.tracer()
    for i in range(300):
        with (
            sync_span(f"p{i}", tracer=tracer, metrics=telemetry.metrics),
            step_span(Step.PLAN, tracer=tracer),
        ):
            pass
    telemetry.force_flush()  # True or False: it returns and does not raise
    telemetry.shutdown()
    if collector != "nothing listening":
        assert slow_receiver.requests.get("/v1/traces", 0) >= 1
        assert slow_receiver.spans() == []  # nothing waited for the 5 s answer
    assert telemetry.shutdown() is True  # a second call is a no-op


def test_a_stuck_collector_keeps_span_memory_bounded_by_the_queue(slow_receiver: OTLPReceiver) -> None:
    config = TelemetryConfig(
        endpoint=slow_receiver.endpoint, export_timeout=EXPORT_TIMEOUT, max_queue_size=64
    )
    telemetry = setup_telemetry(config, env={}, set_global=False)
    tracer = telemetry.tracer()
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)  # one "queue full" line per dropped span
    try:
        for _ in range(500):  # warm up: the queue fills, the exporter is stuck on the slow receiver
            tracer.start_span("warm", attributes={"payload": "x" * 200}).end()
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(10_000):
            tracer.start_span("drop", attributes={"payload": "x" * 200}).end()
        grown = tracemalloc.get_traced_memory()[0] - baseline
        tracemalloc.stop()
    finally:
        logging.getLogger("opentelemetry").setLevel(logging.NOTSET)
        telemetry.shutdown()
    # Kept, 10 000 spans would hold well over 10 MB; a bounded queue holds 64.
    assert grown < 2_000_000, grown
