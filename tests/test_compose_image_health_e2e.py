"""``service_healthy`` on a service whose healthcheck only its image declares, on the real dockerd.

The Compose file has no healthcheck for ``db``: the plan warns, and apply inspects db's image
(pulled, built or present) before anything is created. An image whose config has a HEALTHCHECK
passes and web waits for it; one without is refused in one line, with nothing created.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, docker_cli, list_project_resources

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
CLI = (sys.executable, "-m", "gitdock.agent.cli.main")
HEALTHY = f"FROM {TEST_IMAGE}\nHEALTHCHECK --interval=1s --timeout=3s CMD true\n"


def compose(db: str) -> str:
    """web waits for db to be healthy; db is ``db`` (its image or build lines) and no healthcheck."""
    return f"""services:
  web:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    depends_on:
      db:
        condition: service_healthy
  db:
    {db}
    command: ["sh", "-c", "{LOOP}"]
"""


@pytest.fixture
def healthy_image(project_name: str) -> Iterator[str]:
    """A local image whose config declares a HEALTHCHECK (built by the classic builder)."""
    tag = f"{project_name}-hc:1"
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "--label", f"io.gitdock.project={project_name}", "-"],
        input=HEALTHY,
        text=True,
        capture_output=True,
        check=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    yield tag
    images = docker_cli("images", "-q", "--filter", f"label=io.gitdock.project={project_name}").split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], capture_output=True, check=False)


def cli(project_dir: Path, name: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, command, "-f", str(project_dir / "compose.yaml"), "-p", name],
        capture_output=True,
        text=True,
        env={**os.environ, "TERM": "dumb"},
        timeout=300,
        check=False,
    )


def health_of(container: str) -> str:
    return docker_cli("inspect", "-f", "{{.State.Health.Status}}", container).strip()


def test_an_image_healthcheck_satisfies_service_healthy(
    tmp_path: Path, project_name: str, healthy_image: str
) -> None:
    (tmp_path / "compose.yaml").write_text(compose(f"image: {healthy_image}"))
    plan = cli(tmp_path, project_name, "plan")
    assert plan.returncode == 0, plan.stderr
    assert "CheckHealthcheck" in plan.stdout
    assert '"db" has no healthcheck in the Compose file' in plan.stdout + plan.stderr
    result = cli(tmp_path, project_name, "apply")
    assert result.returncode == 0, result.stderr
    assert health_of(f"{project_name}-db-1") == "healthy"  # web started only after it was
    assert docker_cli("inspect", "-f", "{{.State.Status}}", f"{project_name}-web-1").strip() == "running"


def test_a_healthcheck_from_a_built_image_satisfies_service_healthy(
    tmp_path: Path, project_name: str
) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "Dockerfile").write_text(HEALTHY)
    (tmp_path / "compose.yaml").write_text(compose("build: ./db"))
    project = load_project([str(tmp_path / "compose.yaml")], project_name=project_name, environ={})
    try:
        with DockerClient() as docker:
            outcome = converge(project, docker, revision="c" * 40)
        assert outcome.report is not None and outcome.report.ok, outcome.report
        ops = {op.kind.value: op for op in outcome.plan.operations}  # the last of each kind
        assert ops["CheckHealthcheck"].deps == (ops["BuildImage"].id,)  # inspects the built image
        assert ops["CheckHealthcheck"].id in ops["CreateNetwork"].deps  # before anything is created
        assert health_of(f"{project_name}-db-1") == "healthy"
    finally:
        images = docker_cli("images", "-q", "--filter", f"label=io.gitdock.project={project_name}").split()
        if images:
            subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], capture_output=True, check=False)


def test_no_healthcheck_anywhere_is_refused_before_anything_is_created(
    tmp_path: Path, project_name: str
) -> None:
    (tmp_path / "compose.yaml").write_text(compose(f"image: {TEST_IMAGE}"))
    result = cli(tmp_path, project_name, "apply")
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert 'compose.yaml:2:3: service web depends on "db" being service_healthy' in errors[0], errors
    assert f"neither the Compose file nor image {TEST_IMAGE} declares a healthcheck" in errors[0]
    assert list_project_resources(project_name) == {"container": [], "network": [], "volume": []}
