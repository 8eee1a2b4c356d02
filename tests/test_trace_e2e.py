"""Every reconcile is one trace: span trees in memory, and the agent's OTLP export on the wire."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from gitdock.agent.config import parse_config
from gitdock.agent.git import GitCache
from gitdock.agent.reconcile import Reconciler
from gitdock.agent.state import Result, StateStore, Trigger
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.trust.keys import public_key_pem
from gitdock.runtime.trust.registry import RegistryClient
from gitdock.runtime.trust.sign import sign_image
from gitdock.specs.reference import parse_reference
from support.agent import AgentProcess, github_push
from support.blackhole import BlackHole
from support.docker import TEST_IMAGE, TEST_IMAGE_2
from support.gitserver import Upstream, free_port
from support.otlp_receiver import OTLPReceiver
from support.registry import LocalRegistry, has_registry_binary, push_image, run_registry
from support.spans import capture_spans, find_span, render_tree

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def service(name: str, image: str, env: str = "1") -> str:
    return (
        f"  {name}:\n    image: {image}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n'
        f'    environment: {{GREETING: "{env}"}}\n'
    )


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream.git")


@pytest.fixture
def reconciler(tmp_path: Path, upstream: Upstream, project_name: str) -> Iterator[Reconciler]:
    yield from make_reconciler(tmp_path, upstream, project_name)


def make_reconciler(
    tmp_path: Path, upstream: Upstream, project: str, extra: str = ""
) -> Iterator[Reconciler]:
    text = (
        f"state_dir: {tmp_path / 'state'}\n"
        "telemetry: {environment: staging}\n"
        "defaults: {settle: 0.2s}\n"
        f"{extra}"
        f"sources:\n  - name: app\n    url: {upstream.url}\n    ref: main\n    project: {project}\n"
    )
    config = parse_config(text, str(tmp_path / "agent.yaml"))
    store = StateStore(tmp_path / "state.db")
    with DockerClient() as docker:
        reconciler = Reconciler(config, store, GitCache(tmp_path / "cache"), docker)
        yield reconciler
        reconciler.close()
    store.close()


def reconcile(reconciler: Reconciler) -> tuple[Result, list[ReadableSpan]]:
    source = reconciler.config.sources[0]
    with capture_spans() as exporter:
        result = reconciler.reconcile(source, Trigger.MANUAL)
    return result.result, list(exporter.get_finished_spans())


def test_a_successful_reconcile_is_one_trace_with_a_span_per_step_and_operation(
    reconciler: Reconciler, upstream: Upstream, project_name: str
) -> None:
    sha = upstream.commit({"compose.yaml": "services:\n" + service("web", TEST_IMAGE)})
    result, spans = reconcile(reconciler)
    assert result is Result.SUCCESS
    assert render_tree(spans) == (
        f"SYNC {project_name}\n"
        "  fetch\n"
        "  load\n"
        "  policy\n"
        "  observe\n"
        "  plan\n"
        "  execute\n"
        "    CreateNetwork network:default\n"
        "    CreateContainer service:web:1\n"
        "  health\n"
    )
    assert len({s.context.trace_id for s in spans}) == 1
    root = find_span(spans, f"SYNC {project_name}")
    attrs = dict(root.attributes or {})
    assert attrs["cicd.pipeline.name"] == project_name
    assert attrs["cicd.pipeline.action.name"] == "SYNC"
    assert attrs["cicd.pipeline.result"] == "success"
    assert attrs["vcs.repository.url.full"] == upstream.url
    assert attrs["vcs.ref.head.name"] == "main"
    assert attrs["vcs.ref.head.revision"] == sha
    assert attrs["deployment.environment.name"] == "staging"
    op = dict(find_span(spans, "CreateContainer service:web:1").attributes or {})
    assert op["container.name"] == f"{project_name}-web-1"
    assert op["container.image.name"] == TEST_IMAGE.rsplit(":", 1)[0]  # semconv: the name, no tag
    assert len(str(op["container.id"])) == 64
    assert op["gitdock.operation.cause"] == "not found"
    plan = find_span(spans, "plan")
    assert [e.name for e in plan.events] == ["plan"]
    assert "service:web:1, CreateContainer, not found" in str(
        (plan.events[0].attributes or {})["gitdock.plan.rendered"]
    )


def test_a_bad_spec_is_a_failed_trace(reconciler: Reconciler, upstream: Upstream, project_name: str) -> None:
    upstream.commit({"compose.yaml": "services:\n  web:\n    image: [not, a, string]\n"})
    result, spans = reconcile(reconciler)
    assert result is Result.FAILURE
    assert render_tree(spans) == f"SYNC {project_name}\n  fetch\n  load\n"
    root = find_span(spans, f"SYNC {project_name}")
    assert (root.attributes or {})["cicd.pipeline.result"] == "failure"
    assert root.status.status_code is StatusCode.ERROR
    load = find_span(spans, "load")
    assert load.status.status_code is StatusCode.ERROR
    assert (load.attributes or {})["error.type"] == "SpecError"
    assert [e.name for e in load.events] == ["exception"]


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if not has_registry_binary():
        pytest.skip("docker-registry binary is not installed (Debian package docker-registry)")
    with run_registry() as running:
        yield running


def test_an_untrusted_image_is_an_error_on_that_images_span(
    tmp_path: Path, upstream: Upstream, project_name: str, registry: LocalRegistry
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ci.pub").write_bytes(public_key_pem(key.public_key()))
    signed, unsigned = f"{registry.host}/t/signed:1", f"{registry.host}/t/unsigned:1"
    push_image(TEST_IMAGE, signed)
    push_image(TEST_IMAGE_2, unsigned)
    with RegistryClient() as client:
        sign_image(parse_reference(signed), key, client)
    trust = 'trust: {keys: {ci: {public_key_file: ci.pub}}, rules: [{pattern: "127.0.0.1:*", keys: [ci]}]}\n'
    upstream.commit({"compose.yaml": "services:\n" + service("good", signed) + service("bad", unsigned)})
    for reconciler in make_reconciler(tmp_path, upstream, project_name, trust):
        result, spans = reconcile(reconciler)
    assert result is Result.FAILURE
    assert render_tree(spans).splitlines()[:5] == [
        f"SYNC {project_name}",
        "  fetch",
        "  load",
        "  policy",
        "  observe",
    ]
    verify = find_span(spans, "verify")
    images = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == verify.context.span_id}
    assert set(images) == {f"verify {signed}", f"verify {unsigned}"}
    bad = images[f"verify {unsigned}"]
    assert bad.status.status_code is StatusCode.ERROR
    assert "no signature" in str(bad.status.description)
    assert str((bad.attributes or {})["oci.manifest.digest"]).startswith("sha256:")
    assert images[f"verify {signed}"].status.status_code is not StatusCode.ERROR
    assert "execute" not in render_tree(spans)


def test_the_agent_exports_each_reconcile_over_otlp_and_links_webhooks(
    tmp_path: Path, upstream: Upstream, project_name: str
) -> None:
    upstream.commit({"deploy/compose.yaml": "services:\n" + service("web", TEST_IMAGE, "1")})
    port = free_port()
    config = tmp_path / "agent.yaml"
    (tmp_path / "hook.secret").write_text("s3cret\n")
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nlisten: 127.0.0.1:{port}\n"
        "defaults: {interval: 1h, debounce: 0.1s, settle: 0.2s}\n"
        f"webhooks:\n  github: {{secret: {{file: {tmp_path / 'hook.secret'}}}}}\n"
        f"sources:\n  - name: app\n    url: {upstream.url}\n    path: deploy\n    project: {project_name}\n"
    )
    with OTLPReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_SERVICE_NAME": "gitdock-e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
        with AgentProcess(config, port, env=env) as agent:
            agent.wait_for("the startup reconcile's trace", lambda: _sync_spans(receiver, project_name))
            sha = upstream.commit({"deploy/compose.yaml": "services:\n" + service("web", TEST_IMAGE, "2")})
            body, headers = github_push("s3cret", "refs/heads/main", sha, upstream.url)
            headers["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            request = urllib.request.Request(  # noqa: S310 - a loopback URL the test built
                f"{agent.url}/hooks/github", body, headers, method="POST"
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - as above
                assert response.status == 202
            agent.wait_applied("app", sha)
            # The reconcile of `sha`, not "a second SYNC span": arrival order is the exporter's.
            sync = agent.wait_for(
                "the webhook reconcile's trace", lambda: _sync_span_of(receiver, project_name, sha)
            )
            agent.terminate()
        spans = receiver.spans()
    hook = next(s for s in spans if s.name.startswith("POST"))
    assert hook.trace_id == "0af7651916cd43dd8448eb211c80319c"  # continues the sender's trace
    assert hook.parent_span_id == "b7ad6b7169203331"
    assert (hook.trace_id, hook.span_id) in sync.links
    assert sync.resource["service.name"] == "gitdock-e2e"
    assert sync.attributes["vcs.ref.head.revision"] == sha
    assert sync.attributes["gitdock.trigger"] == "webhook"
    children = {s.name: s for s in spans if s.trace_id == sync.trace_id}
    assert children["execute"].parent_span_id == sync.span_id
    recreate = children["RecreateContainer service:web:1"]
    assert recreate.parent_span_id == children["execute"].span_id
    assert recreate.attributes["gitdock.operation.cause"] == "config changed: environment"


def _sync_spans(receiver: OTLPReceiver, project: str) -> list:  # type: ignore[type-arg]
    return [s for s in receiver.spans() if s.name == f"SYNC {project}"]


def _sync_span_of(receiver: OTLPReceiver, project: str, sha: str) -> Any:
    """The SYNC span of the reconcile that ended at `sha`, or None."""
    return next(
        (s for s in _sync_spans(receiver, project) if s.attributes.get("vcs.ref.head.revision") == sha), None
    )


def test_a_dead_collector_neither_fails_nor_holds_up_a_reconcile(
    tmp_path: Path, upstream: Upstream, project_name: str
) -> None:
    """Proved by ordering, not by the clock: every reconcile answers, and the agent exits 0 on
    SIGTERM, while the collector still holds the first export unanswered."""
    upstream.commit({"deploy/compose.yaml": "services:\n" + service("web", TEST_IMAGE)})
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\nlisten: 127.0.0.1:{port}\n"
        "defaults: {interval: 1h, settle: 0.2s}\n"
        f"sources:\n  - name: app\n    url: {upstream.url}\n    path: deploy\n    project: {project_name}\n"
    )
    with BlackHole() as hole:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": hole.endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            # The longest export_timeout allowed (60 s), so the exporter waits on the black hole
            # for the whole test. It costs no time: SIGTERM bounds the telemetry flush by the
            # agent's shutdown grace (server.SHUTDOWN_GRACE), not by this timeout.
            "OTEL_EXPORTER_OTLP_TIMEOUT": "60000",
        }
        with AgentProcess(config, port, env=env) as agent:
            agent.wait_for("the first deploy", lambda: agent.status("app")["lastResult"] == "success")
            stuck = hole.wait_for_request("/v1/traces", timeout=60)  # the batch processor's first export
            assert hole.is_held(stuck), hole.requests
            for _ in range(3):
                code, body = agent.post("/api/v1/sources/app/reconcile?wait=1")
                assert code == 200, body
                assert body["result"] == "success"
                # Answered while the export is still unanswered: the reconcile did not wait on it
                # (an exporter that gave up would have closed its connection).
                assert hole.is_held(stuck), hole.requests
                assert hole.open_connections >= 1
            assert json.dumps(body)  # the status answer stayed well-formed
            agent.terminate(30)  # a hang guard, not a measure of speed
            assert agent.proc is not None
            assert agent.proc.returncode == 0, agent.log()[-3000:]
        # One trace export, held until the agent exited: the exporter never gave up (a give-up
        # lets the batch processor send the next batch), so the agent stopped with it still stuck.
        assert [r.path for r in hole.requests].count("/v1/traces") == 1, hole.requests
