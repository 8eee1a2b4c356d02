"""``pre_stop`` hooks on ``gitdock down``, as ``docker compose down`` runs them.

With the Compose file (``-f``, or a default file in the working directory) each service's
pre_stop hooks run in its containers before they stop; a failing hook is reported and the
teardown goes ahead (the rule of the recreate path). From the labels alone (no file) there are
no hooks to run. The e2e tests use the real dockerd; a hook writes into a named volume, which
``down`` keeps, so the file it wrote is read back after the containers are gone.
"""

from __future__ import annotations

import io
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitdock.runtime.observe import ObservedContainer, ObservedState
from gitdock.runtime.plan import OpKind, plan_down
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, remove_project, write_compose
from support.faults import CLI, docker, gitdock_env

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(pre_stop: str) -> str:
    return f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            volumes: [data:/data]
            pre_stop:
              - command: ["sh", "-c", "{pre_stop}"]
          db:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
        volumes:
          data: {{}}
    """


@pytest.fixture
def h11d_project(project_name: str) -> Iterator[str]:
    """A ``gdt-h11d-…`` project name; everything labelled with it is removed afterwards."""
    name = f"gdt-h11d-{secrets.token_hex(3)}"
    yield name
    remove_project(name)


def gitdock(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI, run in ``cwd`` (where ``down`` looks for a default Compose file)."""
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=gitdock_env(), cwd=cwd, timeout=300, check=False
    )


def volume_file(volume: str, path: str) -> str:
    """``path`` in ``volume``, copied out of a container created (never started) to mount it."""
    docker("volume", "inspect", volume)  # kept by down (create would make a missing one)
    ident = docker("create", "-v", f"{volume}:/data", TEST_IMAGE).strip()
    try:
        archive = subprocess.run(["docker", "cp", f"{ident}:{path}", "-"], capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            member = tar.extractfile(tar.getmembers()[0])
            return member.read().decode().strip() if member is not None else ""
    finally:
        docker("rm", ident)


def project_containers(name: str) -> list[str]:
    return docker("ps", "-a", "-q", "--filter", f"label=io.gitdock.project={name}").split()


@pytest.mark.docker
def test_down_with_the_file_runs_pre_stop_before_the_stop(tmp_path: Path, h11d_project: str) -> None:
    f = write_compose(tmp_path, compose("echo drained $$(hostname) >> /data/pre"))
    applied = gitdock("apply", "-f", str(f), "-p", h11d_project)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    host = docker("inspect", "-f", "{{.Config.Hostname}}", f"{h11d_project}-web-1").strip()
    result = gitdock("down", "-f", str(f), "-p", h11d_project)
    assert result.returncode == 0, result.stdout + result.stderr
    assert project_containers(h11d_project) == []
    assert volume_file(f"{h11d_project}_data", "/data/pre") == f"drained {host}", "ran in web-1, once"


@pytest.mark.docker
def test_a_failing_pre_stop_on_down_is_reported_and_the_teardown_goes_ahead(
    tmp_path: Path, h11d_project: str
) -> None:
    f = write_compose(tmp_path, compose("echo half >> /data/pre; exit 5"))
    assert gitdock("apply", "-f", str(f), "-p", h11d_project).returncode == 0
    result = gitdock("down", "-p", h11d_project, cwd=tmp_path)  # the default compose.yaml here
    assert result.returncode == 0, result.stdout + result.stderr
    assert "service web: pre_stop[0] hook exited with code 5; stopping anyway" in result.stderr
    assert project_containers(h11d_project) == []
    assert volume_file(f"{h11d_project}_data", "/data/pre") == "half"


@pytest.mark.docker
def test_down_from_the_labels_alone_runs_no_hook(tmp_path: Path, h11d_project: str) -> None:
    f = write_compose(tmp_path, compose("echo drained >> /data/pre"))
    assert gitdock("apply", "-f", str(f), "-p", h11d_project).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = gitdock("down", "-p", h11d_project, cwd=elsewhere)
    assert result.returncode == 0, result.stdout + result.stderr
    assert project_containers(h11d_project) == []
    with pytest.raises(subprocess.CalledProcessError):
        volume_file(f"{h11d_project}_data", "/data/pre")  # no file: no hook ran


def test_plan_down_gives_a_hooked_service_its_container_and_leaves_the_text_alone(tmp_path: Path) -> None:
    """Pure: with the project, web's removal carries its pre_stop hooks; db's carries nothing."""
    project = load_project([write_compose(tmp_path, compose("echo bye"))], environ={}, project_name="demo")
    observed = ObservedState(
        containers=tuple(_running("demo", service) for service in ("db", "web")),
        networks=(),
        volumes=(),
        images=(),
    )
    without, with_file = plan_down("demo", observed), plan_down("demo", observed, project=project)
    assert with_file.render() == without.render()
    hooks = {
        op.resource: op.container.pre_stop if op.container else ()
        for op in with_file.operations
        if op.kind is OpKind.REMOVE_CONTAINER
    }
    assert [h.command for h in hooks["service:web:1"]] == [("sh", "-c", "echo bye")]
    assert hooks["service:db:1"] == ()
    assert all(op.container is None for op in without.operations)


def _running(project: str, service: str) -> ObservedContainer:
    return ObservedContainer(
        id=f"id-{service}",
        name=f"{project}-{service}-1",
        image=TEST_IMAGE,
        image_id="sha256:" + "0" * 64,
        state="running",
        status="Up",
        labels={
            "io.gitdock.project": project,
            "io.gitdock.service": service,
            "io.gitdock.container-number": "1",
        },
        networks={},
        created=1,
    )


def test_with_the_file_down_removes_dependents_before_what_they_depend_on(tmp_path: Path) -> None:
    """Pure: as docker compose down, in reverse dependency order; from labels, all at once."""
    text = compose("echo bye").replace(
        "volumes: [data:/data]", "volumes: [data:/data]\n            depends_on: [db]"
    )
    project = load_project([write_compose(tmp_path, text)], environ={}, project_name="demo")
    observed = ObservedState(
        containers=tuple(_running("demo", service) for service in ("db", "web")),
        networks=(),
        volumes=(),
        images=(),
    )
    assert plan_down("demo", observed, project=project).render().splitlines() == [
        "[] -> #1 service:web:1, RemoveContainer, down",
        "[#1] -> #2 service:db:1, RemoveContainer, down",
    ]
    assert plan_down("demo", observed).render().splitlines() == [
        "[] -> #1 service:db:1, RemoveContainer, down",
        "[] -> #2 service:web:1, RemoveContainer, down",
    ]
