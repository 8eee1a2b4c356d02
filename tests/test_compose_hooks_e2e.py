"""``post_start`` and ``pre_stop`` hooks, run through the Engine's exec API on the real dockerd.

A post_start hook runs after each start with its user, working_dir and environment
(``privileged`` is checked in the exec body only: this dockerd cannot grant an exec
capabilities), its output in the progress display; a failing one fails the apply naming its exit
code (a new container is removed, a recreate puts the old container back); a pre_stop hook runs
in the old container before a recreate stops it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitdock.runtime.hooks import exec_body
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, write_compose
from support.faults import docker, read_file, run_gitdock

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(rev: str, post_start: str = "echo started $$REV >> /data/post") -> str:
    return f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            environment: {{REV: "{rev}"}}
            volumes: [data:/data]
            post_start:
              - command: ["sh", "-c", "echo $$(id -u) $$(pwd) $$WHO-$$REV"]
                user: nobody
                working_dir: /tmp
                environment: {{WHO: hook}}
              - command: ["sh", "-c", "{post_start}"]
            pre_stop:
              - command: ["sh", "-c", "echo stopping $$REV >> /data/pre"]
        volumes:
          data: {{}}
    """


def apply(f: Path, project: str) -> subprocess.CompletedProcess[str]:
    return run_gitdock("apply", "-f", str(f), "-p", project)


def container_id(name: str) -> str:
    return docker("inspect", "-f", "{{.Id}}", name).strip()


@pytest.mark.docker
def test_post_start_runs_with_its_settings_and_shows_its_output(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, compose("1"))
    result = apply(f, project_name)
    assert result.returncode == 0, result.stdout + result.stderr
    name = f"{project_name}-web-1"
    assert "service:web:1 | service web: post_start[0]: 65534 /tmp hook-1" in result.stderr, "progress"
    assert read_file(name, "/data/post") == "started 1"


@pytest.mark.docker
def test_pre_stop_runs_in_the_old_container_before_a_recreate(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, compose("1"))
    assert apply(f, project_name).returncode == 0
    f.write_text(compose("2"))
    result = apply(f, project_name)
    assert result.returncode == 0, result.stdout + result.stderr
    name = f"{project_name}-web-1"
    assert read_file(name, "/data/pre") == "stopping 1", "the old container's pre_stop ran"
    assert read_file(name, "/data/post").splitlines() == ["started 1", "started 2"]


@pytest.mark.docker
def test_a_failing_post_start_fails_a_create_naming_the_exit_code(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, compose("1", post_start="exit 3"))
    result = apply(f, project_name)
    assert result.returncode != 0
    assert "service web: post_start[1] hook exited with code 3" in result.stdout + result.stderr
    listed = docker("ps", "-a", "-q", "--filter", f"label=io.gitdock.project={project_name}").split()
    assert listed == [], "the new container is removed, so the next reconcile tries again"


@pytest.mark.docker
def test_a_failing_post_start_on_a_recreate_keeps_the_old_container(
    tmp_path: Path, project_name: str
) -> None:
    f = write_compose(tmp_path, compose("1"))
    assert apply(f, project_name).returncode == 0
    name = f"{project_name}-web-1"
    old = container_id(name)
    f.write_text(compose("2", post_start="exit 4"))
    result = apply(f, project_name)
    assert result.returncode != 0
    assert "service web: post_start[1] hook exited with code 4" in result.stdout + result.stderr
    assert container_id(name) == old
    assert docker("inspect", "-f", "{{.State.Status}}", name).strip() == "running"


def test_hooks_load_into_exec_bodies(tmp_path: Path) -> None:
    """Pure: the loaded hooks, as the exec API takes them (privileged included)."""
    text = compose("1").replace(
        '- command: ["sh", "-c", "echo started',
        '- privileged: true\n                command: ["sh", "-c", "echo started',
    )
    web = load_project([write_compose(tmp_path, text)], environ={}).service("web")
    assert [exec_body(h) for h in web.post_start] == [
        {
            "Cmd": ["sh", "-c", "echo $(id -u) $(pwd) $WHO-$REV"],
            "AttachStdout": True,
            "AttachStderr": True,
            "Privileged": False,
            "User": "nobody",
            "WorkingDir": "/tmp",
            "Env": ["WHO=hook"],
        },
        {
            "Cmd": ["sh", "-c", "echo started $REV >> /data/post"],
            "AttachStdout": True,
            "AttachStderr": True,
            "Privileged": True,
        },
    ]


@pytest.mark.docker
def test_pre_stop_runs_in_a_replica_that_is_scaled_down(tmp_path: Path, project_name: str) -> None:
    two = compose("1").replace("volumes: [data:/data]", "volumes: [data:/data]\n            scale: 2")
    f = write_compose(tmp_path, two)
    assert apply(f, project_name).returncode == 0
    name = f"{project_name}-web-1"
    f.write_text(compose("1"))
    result = apply(f, project_name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert docker("ps", "-a", "-q", "--filter", f"name=^{project_name}-web-2$").split() == []
    assert read_file(name, "/data/pre") == "stopping 1", "replica 2 ran its pre_stop before it was removed"
