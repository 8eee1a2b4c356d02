"""Change one of N against the real dockerd: the calls a replacement costs, and no more.

The requests gitdock sends are seen through an httpx event hook on the real client (the
requests still go to dockerd). Stop-first replacement of one container is: create the
replacement, stop the old one once, start the new one, remove the old one, rename the new
one; no inspect of the old container (its mounts come from the snapshot), none of the image
(the new body mounts something at every path the old one had a volume at) and none after the
start. The applied record is then made from one label-filtered list, and names the new
container, so `drift` sees nothing.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gitdock.agent.applied_store import AppliedStore, store_applied
from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.drift.watch import check_drift
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, docker_cli, docker_host, write_compose

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(greeting: str) -> str:
    return f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            environment:
              GREETING: {greeting}
            volumes:
              - data:/data
          worker:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
        volumes:
          data: {{}}
    """


def shape(request: httpx.Request) -> str:
    """``METHOD /path`` with ids and the API version taken out, e.g. ``POST /containers/ID/stop``."""
    parts = request.url.path.split("/")[2:]  # drop "" and "v1.xx"
    if len(parts) >= 2 and parts[0] == "containers" and parts[1] not in ("create", "json"):
        parts[1] = "ID"
    if parts[:1] == ["images"] and parts[-1] == "json" and len(parts) > 2:
        parts = ["images", "REF", "json"]
    filtered = "?label" if "filters" in request.url.params else ""
    return f"{request.method} /{'/'.join(parts)}{filtered}"


def test_changing_one_service_makes_only_the_replacement_calls(tmp_path: Path, project_name: str) -> None:
    state_dir = tmp_path / "state"
    # Every request through httpx, so the event hook below sees the GETs too (a plain unix
    # client sends those without httpx: runtime.docker's _over_unix).
    transport = httpx.HTTPTransport(uds=docker_host().removeprefix("unix://"))
    with DockerClient(transport=transport) as docker:
        check_one_change(tmp_path, project_name, state_dir, docker)


def check_one_change(tmp_path: Path, project_name: str, state_dir: Path, docker: DockerClient) -> None:
    first = load_project([write_compose(tmp_path, compose("hi"))], project_name=project_name)
    outcome = converge(first, docker)
    assert outcome.report is not None and outcome.report.ok
    store_applied(first, docker, outcome, state_dir)
    old_id = docker_cli("inspect", "-f", "{{.Id}}", f"{project_name}-web-1").strip()

    sent: list[str] = []
    docker._http.event_hooks["request"].append(lambda request: sent.append(shape(request)))
    second = load_project([write_compose(tmp_path, compose("hello"))], project_name=project_name)
    outcome = converge(second, docker)
    assert outcome.report is not None and outcome.report.ok
    executed = sorted(sent[4:])  # after the observe's four lists
    assert sorted(sent[:4]) == ["GET /containers/json", "GET /images/json", "GET /networks", "GET /volumes"]
    assert executed == sorted(
        [
            "POST /containers/create",
            "POST /containers/ID/stop",
            "POST /containers/ID/start",
            "DELETE /containers/ID",
            "POST /containers/ID/rename",
        ]
    )

    sent.clear()
    record = store_applied(second, docker, outcome, state_dir)
    assert sent == ["GET /containers/json?label"]
    assert record is not None
    new_id = docker_cli("inspect", "-f", "{{.Id}}", f"{project_name}-web-1").strip()
    assert new_id != old_id
    web = record.container_named(f"{project_name}-web-1")
    assert web is not None and web.id == new_id and web.networks == (f"{project_name}_default",)
    assert docker_cli("inspect", "-f", "{{.State.Status}}", new_id).strip() == "running"
    with AppliedStore.open(state_dir) as store:
        saved = store.load(project_name)
    assert saved is not None
    assert not check_drift(docker, saved).items


def test_a_recreate_carries_an_anonymous_volume_over_from_the_snapshot(
    tmp_path: Path, project_name: str
) -> None:
    """The old container's mounts come from the snapshot, not an inspect: its anonymous
    volume is still mounted into the replacement (the data survives)."""
    text = f"""
        services:
          app:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            environment: {{REV: "%s"}}
            volumes: [/cache]
    """
    name = f"{project_name}-app-1"
    with DockerClient() as docker:
        first = load_project([write_compose(tmp_path, text % "1")], project_name=project_name)
        assert converge(first, docker).is_ok
        docker_cli("exec", name, "sh", "-c", "echo kept > /cache/file")
        second = load_project([write_compose(tmp_path, text % "2")], project_name=project_name)
        outcome = converge(second, docker)
        assert outcome.report is not None and outcome.report.ok
    assert docker_cli("exec", name, "cat", "/cache/file").strip() == "kept"
