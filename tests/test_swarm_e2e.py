"""The Swarm target against a real Swarm: a private dockerd with ``docker swarm init``.

The shared dockerd is never touched: the Swarm runs on its own daemon in its own network
namespace (``support.swarm``), with the test image loaded into it. Monitor windows are a
few seconds so the rollback test stays short.
"""

from __future__ import annotations

import argparse
import json
import secrets
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitdock.agent.cli.common import run_command
from gitdock.agent.cli.compose import add_compose_commands
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.plan.model import ConflictError, OpKind
from gitdock.runtime.swarm.converge import SwarmOutcome, converge_swarm, tear_down_swarm
from gitdock.runtime.swarm.execute import SwarmStatus
from gitdock.runtime.swarm.load import load_swarm_inputs
from gitdock.specs.load import load_project
from support.docker import TEST_IMAGE, TEST_IMAGE_2
from support.dockerd import SecondDockerd
from support.swarm import SingleNodeSwarm

pytestmark = pytest.mark.docker

LOOP = '["sh", "-c", "trap exit TERM; while true; do sleep 1; done"]'


@pytest.fixture(scope="module")
def swarm() -> Iterator[SingleNodeSwarm]:
    reason = SecondDockerd.unavailable_reason()
    if reason:
        pytest.fail(f"a private Swarm cannot start here: {reason}")
    with SingleNodeSwarm() as s:
        s.node.load_test_image(TEST_IMAGE_2)
        yield s


@pytest.fixture
def stack(swarm: SingleNodeSwarm) -> Iterator[str]:
    name = f"gds{secrets.token_hex(3)}"
    yield name
    with DockerClient(swarm.host) as docker:
        tear_down_swarm(name, docker)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "compose.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _apply(swarm: SingleNodeSwarm, path: Path, name: str, *, dry_run: bool = False) -> SwarmOutcome:
    project = load_project([path], project_name=name)
    inputs = load_swarm_inputs([path], project)
    with DockerClient(swarm.host) as docker:
        return converge_swarm(project, docker, inputs, dry_run=dry_run, timeout=120)


def _services(swarm: SingleNodeSwarm, name: str) -> dict[str, Any]:
    ids = swarm.docker("service", "ls", "-q", "--filter", f"label=io.gitdock.project={name}").split()
    if not ids:
        return {}
    return {s["Spec"]["Name"]: s for s in json.loads(swarm.docker("service", "inspect", *ids))}


def _twenty(tmp_path: Path, changed_env: str = "1") -> Path:
    """20 services on one encrypted overlay, sharing a config and a secret (JSON is YAML)."""
    service = {
        "image": TEST_IMAGE,
        "command": json.loads(LOOP),
        "networks": ["mesh"],
        "configs": [{"source": "app", "target": "/etc/app.conf"}],
        "secrets": ["token"],
        "deploy": {
            "replicas": 1,
            "update_config": {"order": "start-first", "failure_action": "rollback", "monitor": "2s"},
        },
    }
    services = {
        f"s{i:02d}": service | {"environment": {"N": changed_env if i == 7 else "1"}} for i in range(20)
    }
    (tmp_path / "token.txt").write_text("s3cret-token")
    compose = {
        "services": services,
        "networks": {"mesh": {"attachable": True, "driver_opts": {"encrypted": ""}}},
        "configs": {"app": {"content": "level=info"}},
        "secrets": {"token": {"file": "./token.txt"}},
    }
    path = tmp_path / "compose.yaml"
    path.write_text(json.dumps(compose))
    return path


def test_twenty_services_deploy_then_noop_then_one_change_rolls_only_that_service(
    swarm: SingleNodeSwarm, stack: str, tmp_path: Path
) -> None:
    first = _apply(swarm, _twenty(tmp_path), stack)
    assert first.is_ok, first.report and [r.render() for r in first.report.results]
    assert first.plan.summary() == {
        "CreateConfig": 1,
        "CreateNetwork": 1,
        "CreateSecret": 1,
        "CreateService": 20,
    }
    live = _services(swarm, stack)
    assert len(live) == 20
    net = json.loads(swarm.docker("network", "inspect", f"{stack}_mesh"))[0]
    assert net["Driver"] == "overlay" and net["Attachable"] and "encrypted" in net["Options"]

    again = _apply(swarm, _twenty(tmp_path), stack)
    assert again.plan.is_empty and again.report is None
    assert again.mutating_calls == 0 and again.api_calls <= 5  # version + four list calls

    changed = _apply(swarm, _twenty(tmp_path, changed_env="2"), stack)
    assert changed.plan.render() == "[] -> #1 service:s07, UpdateService, config hash changed"
    assert changed.is_ok and changed.report is not None
    after = _services(swarm, stack)
    moved = {n for n in after if after[n]["Version"] != live[n]["Version"]}
    assert moved == {f"{stack}_s07"}  # updated in place (same id), not removed and recreated
    assert after[f"{stack}_s07"]["ID"] == live[f"{stack}_s07"]["ID"]


def test_a_failing_update_is_rolled_back_by_swarm_and_reported(
    swarm: SingleNodeSwarm, stack: str, tmp_path: Path
) -> None:
    text = """
        services:
          api:
            image: {image}
            command: {command}
            healthcheck: {{test: ["CMD", "true"], interval: 1s, retries: 1}}
            deploy:
              replicas: 1
              update_config: {{order: start-first, failure_action: rollback, monitor: 3s}}
        """
    good = _apply(swarm, _write(tmp_path, text.format(image=TEST_IMAGE, command=LOOP)), stack)
    assert good.is_ok
    before = _services(swarm, stack)[f"{stack}_api"]
    bad = _apply(
        swarm, _write(tmp_path, text.format(image=TEST_IMAGE, command='["sh", "-c", "exit 1"]')), stack
    )
    assert bad.report is not None and not bad.is_ok
    (result,) = bad.report.results
    assert result.status is SwarmStatus.ROLLED_BACK
    assert "non-zero exit (1)" in (result.error or "")
    live = _services(swarm, stack)[f"{stack}_api"]
    assert live["UpdateStatus"]["State"] == "rollback_completed"
    assert live["Spec"]["Labels"] == before["Spec"]["Labels"]  # the old spec runs again


def test_a_config_change_rolls_its_services_and_removes_the_old_version(
    swarm: SingleNodeSwarm, stack: str, tmp_path: Path
) -> None:
    text = """
        services:
          web:
            image: {image}
            command: {loop}
            configs: [{{source: app, target: /etc/app.conf}}]
        configs:
          app: {{content: "{content}"}}
        """
    assert _apply(
        swarm, _write(tmp_path, text.format(image=TEST_IMAGE, loop=LOOP, content="v1")), stack
    ).is_ok
    old = swarm.docker("config", "ls", "-q", "--filter", f"label=io.gitdock.project={stack}").split()
    outcome = _apply(swarm, _write(tmp_path, text.format(image=TEST_IMAGE, loop=LOOP, content="v2")), stack)
    assert [op.kind for op in outcome.plan.operations] == [
        OpKind.CREATE_CONFIG,
        OpKind.UPDATE_SERVICE,
        OpKind.REMOVE_CONFIG,
    ]
    assert outcome.is_ok
    now = swarm.docker("config", "ls", "-q", "--filter", f"label=io.gitdock.project={stack}").split()
    assert len(now) == 1 and now != old


def test_replicas_scaled_by_hand_are_reported_and_healed(
    swarm: SingleNodeSwarm, stack: str, tmp_path: Path
) -> None:
    path = _write(
        tmp_path,
        f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: {LOOP}
            deploy: {{replicas: 2}}
        """,
    )
    assert _apply(swarm, path, stack).is_ok
    swarm.docker("service", "scale", "--detach", f"{stack}_web=4")
    healed = _apply(swarm, path, stack)
    assert [d.render() for d in healed.drift] == ["service:web: replicas is 4, want 2"]
    assert healed.plan.render() == "[] -> #1 service:web, UpdateService, replicas changed by hand: 4, want 2"
    assert healed.is_ok
    spec = _services(swarm, stack)[f"{stack}_web"]["Spec"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 2
    assert _apply(swarm, path, stack).plan.is_empty


def test_down_removes_the_stack_keeps_volumes_and_leaves_foreign_services_alone(
    swarm: SingleNodeSwarm, stack: str, tmp_path: Path
) -> None:
    path = _write(
        tmp_path,
        f"""
        services:
          db:
            image: {TEST_IMAGE}
            command: {LOOP}
            volumes: [data:/data]
        volumes:
          data: {{}}
        """,
    )
    assert _apply(swarm, path, stack).is_ok
    foreign = f"{stack}_other"
    swarm.docker("service", "create", "--detach", "--name", foreign, TEST_IMAGE, "sleep", "600")
    try:
        with DockerClient(swarm.host) as docker:
            outcome = tear_down_swarm(stack, docker)
        assert outcome.is_ok
        assert [op.resource for op in outcome.plan.operations] == ["service:db", "network:default"]
        assert swarm.docker("service", "ls", "--format", "{{.Name}}").split() == [foreign]
        volumes = swarm.docker("volume", "ls", "-q", "--filter", f"label=io.gitdock.project={stack}").split()
        assert volumes == [f"{stack}_data"]
        (tmp_path / "other.yaml").write_text(f"services:\n  other:\n    image: {TEST_IMAGE}\n")
        with pytest.raises(ConflictError, match=f"service '{foreign}' exists and is not owned"):
            _apply(swarm, tmp_path / "other.yaml", stack)
    finally:
        swarm.docker("service", "rm", foreign)
        _remove_volume(swarm, f"{stack}_data")


def _remove_volume(swarm: SingleNodeSwarm, name: str) -> None:
    """Once the removed service's last container has gone (Swarm stops tasks asynchronously)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            swarm.docker("volume", "rm", name)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _cli(*argv: str) -> int:
    """The real plan/apply/down parsers (which carry ``--swarm``), run as ``gitdock`` runs them."""
    parser = argparse.ArgumentParser(prog="gitdock")
    parser.add_argument("--host")
    sub = parser.add_subparsers(dest="command", required=True)
    add_compose_commands(sub)
    return run_command(parser.parse_args(argv))


def test_cli_apply_plan_and_down_swarm(
    swarm: SingleNodeSwarm, stack: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, f"services:\n  web:\n    image: {TEST_IMAGE}\n    command: {LOOP}\n")
    argv = ["-f", str(path), "-p", stack, "--swarm"]
    assert _cli("--host", swarm.host, "apply", *argv) == 0
    assert _cli("--host", swarm.host, "plan", *argv, "--exit-code") == 0
    out = capsys.readouterr().out
    assert f"stack {stack} is up to date: nothing to change" in out
    assert _cli("--host", swarm.host, "down", "-p", stack, "--swarm") == 0
    assert _services(swarm, stack) == {}
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"services:\n  web:\n    image: {TEST_IMAGE}\n    deploy: {{update_config: {{order: sideways}}}}\n"
    )
    assert _cli("--host", swarm.host, "apply", "-f", str(bad), "-p", stack, "--swarm") == 1
    err = capsys.readouterr().err
    assert 'services.web.deploy.update_config.order: "sideways" is not one of' in err
    assert "Traceback" not in err
