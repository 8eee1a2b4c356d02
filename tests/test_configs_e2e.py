"""Configs and secrets against the real dockerd: content is copied in, and a changed content
recreates the container that uses it (which docker compose misses, docker/compose#11900)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, docker_cli, write_compose

pytestmark = pytest.mark.docker


def compose_text(greeting: str) -> str:
    return f"""
        services:
          app:
            image: {TEST_IMAGE}
            init: true
            command: ["sh", "-c", "while :; do sleep 1; done"]
            configs: [{{source: greeting, target: /etc/greeting, mode: 0400}}]
        configs:
          greeting: {{content: "{greeting}"}}
    """


def test_changed_config_content_recreates_the_container(tmp_path: Path, project_name: str) -> None:
    path = write_compose(tmp_path, compose_text("hello"))
    with DockerClient() as docker:
        first = converge(load_project([path], project_name=project_name, environ={}), docker)
        assert first.report is not None and first.report.ok
        app = f"{project_name}-app-1"
        assert docker_cli("exec", app, "cat", "/etc/greeting") == "hello"
        assert docker_cli("exec", app, "stat", "-c", "%a", "/etc/greeting").strip() == "400"

        write_compose(tmp_path, compose_text("bonjour"))
        second = converge(load_project([path], project_name=project_name, environ={}), docker)
    assert second.plan.render().endswith("service:app:1, RecreateContainer, config changed: configs")
    assert second.report is not None and second.report.ok
    assert docker_cli("exec", app, "cat", "/etc/greeting") == "bonjour"
