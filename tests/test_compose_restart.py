"""``depends_on: {x: {restart: true}}``: when gitdock updates x, the dependent is restarted after it.

Pure: the plan as golden text, from a real load and the snapshot of the applied previous
revision. End to end on the real dockerd: the dependent keeps its container and starts again.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitdock.runtime.desired import desired_container, desired_network
from gitdock.runtime.observe import ObservedContainer, ObservedImage, ObservedNetwork, ObservedState
from gitdock.runtime.plan import plan_project
from gitdock.specs import load_project
from gitdock.specs.model import Project
from support.docker import TEST_IMAGE, write_compose
from support.faults import docker, run_gitdock

IMAGE_ID = "sha256:" + "1" * 64
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(rev: str, condition: str = "service_started") -> str:
    return f"""
        services:
          db:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            environment: {{REV: "{rev}"}}
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            depends_on: {{db: {{condition: {condition}, restart: true}}}}
          api:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            depends_on: [db]
          edge:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            depends_on: {{web: {{condition: service_started, restart: true}}}}
    """


def load(tmp_path: Path, text: str) -> Project:
    return load_project([write_compose(tmp_path, text)], project_name="demo", environ={})


def applied(p: Project) -> ObservedState:
    """The snapshot right after a successful apply of ``p``."""
    containers = []
    for s in p.services:
        dc = desired_container(p, s, 1)
        containers.append(
            ObservedContainer(
                id=f"id-{dc.name}",
                name=dc.name,
                image=s.image,
                image_id=IMAGE_ID,
                state="running",
                status="Up 1 minute",
                labels=dict(dc.create_body["Labels"]),
                networks={net: "nid" for net, _ in dc.networks},
                created=100,
            )
        )
    networks = [
        ObservedNetwork(f"nid-{dn.name}", dn.name, "bridge", dict(dn.create_body["Labels"]))
        for dn in (desired_network(p, n) for n in p.networks)
    ]
    return ObservedState(
        tuple(containers), tuple(networks), (), (ObservedImage(IMAGE_ID, (TEST_IMAGE,), ()),)
    )


def test_plan_restarts_the_dependents_that_ask_after_their_dependency_is_recreated(tmp_path: Path) -> None:
    before = applied(load(tmp_path, compose("1")))
    plan = plan_project(load(tmp_path, compose("2")), before)
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:db:1, RecreateContainer, config changed: environment",
            "[#1] -> #2 service:web:1, RestartContainer, dependency db was updated",
            "[#2] -> #3 service:edge:1, RestartContainer, dependency web was updated",
        ]
    )


def test_plan_restarts_a_dependent_once_its_dependency_is_healthy(tmp_path: Path) -> None:
    text = compose("1", "service_healthy").replace(
        "environment:", 'healthcheck: {test: ["CMD", "true"], interval: 1s}\n            environment:'
    )
    before = applied(load(tmp_path, text))
    plan = plan_project(load(tmp_path, text.replace('REV: "1"', 'REV: "2"')), before)
    assert plan.render().splitlines()[:3] == [
        "[] -> #1 service:db:1, RecreateContainer, config changed: environment",
        "[#1] -> #2 service:db, WaitHealthy, service_healthy required by web",
        "[#2] -> #3 service:web:1, RestartContainer, dependency db was updated",
    ]


def test_plan_restarts_nothing_when_the_dependency_is_unchanged(tmp_path: Path) -> None:
    p = load(tmp_path, compose("1"))
    assert plan_project(p, applied(p)).is_empty


def test_plan_does_not_restart_a_dependent_that_is_recreated_anyway(tmp_path: Path) -> None:
    before = applied(load(tmp_path, compose("1")))
    text = compose("2").replace("depends_on: {db:", 'environment: {X: "1"}\n            depends_on: {db:')
    rendered = plan_project(load(tmp_path, text), before).render()
    assert "[#1] -> #2 service:web:1, RecreateContainer, config changed: environment" in rendered
    assert "service:web:1, RestartContainer" not in rendered


def started_at(name: str) -> tuple[str, str]:
    info = json.loads(docker("inspect", name))[0]
    return info["Id"], info["State"]["StartedAt"]


@pytest.mark.docker
def test_a_recreated_dependency_restarts_its_dependent(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, compose("1"))
    assert run_gitdock("apply", "-f", str(f), "-p", project_name).returncode == 0
    web, api = started_at(f"{project_name}-web-1"), started_at(f"{project_name}-api-1")
    db = started_at(f"{project_name}-db-1")
    f.write_text(compose("2"))
    result = run_gitdock("apply", "-f", str(f), "-p", project_name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert started_at(f"{project_name}-db-1")[0] != db[0], "db recreated"
    web_now = started_at(f"{project_name}-web-1")
    assert web_now[0] == web[0] and web_now[1] != web[1], "web kept its container and started again"
    assert started_at(f"{project_name}-api-1") == api, "api asked for no restart"
    again = run_gitdock("plan", "-f", str(f), "-p", project_name)
    assert again.returncode == 0 and "RestartContainer" not in again.stdout, "a no-op restarts nothing"
