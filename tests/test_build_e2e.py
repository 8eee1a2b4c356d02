"""`build:` against the real dockerd: built from the context, rebuilt only when it changed.

Two services are built from local Dockerfiles (FROM the local test image, with ARG, RUN, COPY
and a .dockerignore); a third runs a plain image. The images the tests build carry the
project's label and are removed with it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitdock.runtime.converge import Outcome, converge
from gitdock.runtime.docker import DockerClient
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, docker_cli

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
CLI = (sys.executable, "-m", "gitdock.agent.cli.main")
REVISION = "3f2a9c" + "0" * 34

DOCKERFILE = f"""FROM {TEST_IMAGE}
ARG GREETING=hello
RUN echo "$GREETING from the build" > /greeting
COPY app/ /app/
CMD ["sh", "-c", "{LOOP}"]
"""

COMPOSE = f"""
services:
  web:
    build:
      context: ./web
      args: {{GREETING: bonjour}}
  api:
    build: ./api
  db:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
"""


@pytest.fixture
def project_dir(tmp_path: Path, project_name: str) -> Iterator[Path]:
    """A project with two built services; its images are removed afterwards."""
    for service in ("web", "api"):
        context = tmp_path / service
        (context / "app").mkdir(parents=True)
        (context / "Dockerfile").write_text(DOCKERFILE)
        (context / ".dockerignore").write_text("**/*.log\n**/cache\n")
        (context / "app" / "main.sh").write_text(f"echo {service}\n")
        (context / "app" / "debug.log").write_text("not sent\n")
        (context / "app" / "cache").mkdir()
        (context / "app" / "cache" / "blob").write_text("not sent either\n")
    (tmp_path / "compose.yaml").write_text(COMPOSE)
    yield tmp_path
    images = docker_cli("images", "-q", "--filter", f"label=io.gitdock.project={project_name}").split()
    if images:
        subprocess.run(["docker", "rmi", "-f", *sorted(set(images))], capture_output=True, check=False)


def apply(project_dir: Path, name: str, revision: str | None = REVISION) -> Outcome:
    project = load_project([str(project_dir / "compose.yaml")], project_name=name, environ={})
    with DockerClient() as docker:
        return converge(project, docker, revision=revision)


def container_ids(name: str) -> dict[str, str]:
    out = docker_cli(
        "ps",
        "-a",
        "--filter",
        f"label=io.gitdock.project={name}",
        "--format",
        "{{.Names}} {{.ID}} {{.State}}",
    )
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return {row[0]: f"{row[1]} {row[2]}" for row in rows}


def exec_in(container: str, *argv: str) -> str:
    return docker_cli("exec", container, *argv)


def kinds(outcome: Outcome) -> list[str]:
    return [f"{op.resource} {op.kind.value}" for op in outcome.plan.operations]


def test_build_runs_the_dockerfile_from_the_context(project_dir: Path, project_name: str) -> None:
    outcome = apply(project_dir, project_name)
    assert outcome.report is not None and outcome.report.ok, outcome.report
    assert kinds(outcome)[:2] == ["build:api BuildImage", "build:web BuildImage"]
    web = f"{project_name}-web-1"
    assert exec_in(web, "cat", "/greeting").strip() == "bonjour from the build"  # ARG and RUN
    assert exec_in(f"{project_name}-api-1", "cat", "/greeting").strip() == "hello from the build"
    assert exec_in(web, "cat", "/app/main.sh").strip() == "echo web"  # COPY
    listing = exec_in(web, "find", "/app").split()
    assert "/app/debug.log" not in listing and "/app/cache/blob" not in listing  # .dockerignore
    image = json.loads(docker_cli("inspect", docker_cli("inspect", "-f", "{{.Image}}", web).strip()))[0]
    labels = image["Config"]["Labels"]
    assert labels["io.gitdock.build.revision"] == REVISION
    assert labels["io.gitdock.image.source"] == f"build@{REVISION}"
    assert f"{project_name}-web:latest" in image["RepoTags"]
    assert any(t.startswith(f"{project_name}-web:") and not t.endswith(":latest") for t in image["RepoTags"])


def test_second_apply_builds_nothing_and_recreates_nothing(project_dir: Path, project_name: str) -> None:
    assert apply(project_dir, project_name).report.ok  # type: ignore[union-attr]
    before = container_ids(project_name)
    again = apply(project_dir, project_name, revision="b" * 40)  # a new commit, same contexts
    assert again.plan.is_empty and again.report is None
    assert again.mutating_calls == 0
    assert container_ids(project_name) == before


def test_changing_one_file_rebuilds_and_recreates_exactly_that_service(
    project_dir: Path, project_name: str
) -> None:
    assert apply(project_dir, project_name).report.ok  # type: ignore[union-attr]
    before = container_ids(project_name)
    (project_dir / "web" / "app" / "main.sh").write_text("echo web v2\n")
    (project_dir / "api" / "app" / "debug.log").write_text("ignored: changes nothing\n")
    outcome = apply(project_dir, project_name)
    assert outcome.report is not None and outcome.report.ok, outcome.report
    assert [f"{op.render()}" for op in outcome.plan.operations] == [
        "[] -> #1 build:web, BuildImage, context changed",
        "[#1] -> #2 service:web:1, RecreateContainer, image changed",
    ]
    after = container_ids(project_name)
    web = f"{project_name}-web-1"
    assert after[web] != before[web]
    assert {k: v for k, v in after.items() if k != web} == {k: v for k, v in before.items() if k != web}
    assert exec_in(web, "cat", "/app/main.sh").strip() == "echo web v2"


def test_a_broken_dockerfile_fails_naming_the_step_and_changes_nothing(
    project_dir: Path, project_name: str
) -> None:
    assert apply(project_dir, project_name).report.ok  # type: ignore[union-attr]
    before = container_ids(project_name)
    broken = DOCKERFILE.replace('RUN echo "$GREETING', 'RUN exit 3; echo "$GREETING')
    (project_dir / "web" / "Dockerfile").write_text(broken)
    (project_dir / "api" / "app" / "main.sh").write_text("echo api v2\n")  # a good build beside it
    result = subprocess.run(
        [*CLI, "apply", "-f", str(project_dir / "compose.yaml"), "-p", project_name],
        capture_output=True,
        text=True,
        env={**os.environ, "TERM": "dumb"},
        timeout=300,
    )
    assert result.returncode == 1, result
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr
    assert re.match(r"error: build:web: BuildImage failed: Step 3/\d+ : RUN exit 3;", error[0]), error
    assert "returned a non-zero code: 3" in error[0]
    assert "Traceback" not in result.stderr
    assert container_ids(project_name) == before  # the old containers still run, untouched
    assert all(state.endswith("running") for state in before.values())


def test_a_missing_context_is_refused_before_anything_changes(project_dir: Path, project_name: str) -> None:
    (project_dir / "compose.yaml").write_text(COMPOSE.replace("./api", "./nope"))
    with pytest.raises(Exception, match=r"service api: build context .*/nope: not a directory"):
        apply(project_dir, project_name)
    assert container_ids(project_name) == {}


def test_build_output_is_in_the_trace_and_the_progress_display(project_dir: Path, project_name: str) -> None:
    from gitdock.agent import telemetry as tm
    from support.spans import capture_spans

    shown: list[str] = []
    project = load_project([str(project_dir / "compose.yaml")], project_name=project_name, environ={})
    with capture_spans() as exporter, DockerClient() as docker:
        hooks = tm.converge_hooks(then_output=lambda op, line: shown.append(f"{op.resource} {line}"))
        outcome = converge(project, docker, hooks=hooks, revision=REVISION)
    assert outcome.report is not None and outcome.report.ok
    spans = {s.name: s for s in exporter.get_finished_spans()}
    build = spans["BuildImage build:web"]
    lines = [str(e.attributes["line"]) for e in build.events if e.name == "build.output" and e.attributes]
    assert re.fullmatch(rf"Step 1/\d+ : FROM {TEST_IMAGE}", lines[0]), lines
    assert any(line.startswith("Successfully tagged") for line in lines)
    assert f"build:web {lines[0]}" in shown


def test_a_policy_that_denies_builds_refuses_the_project_before_anything_is_created(
    project_dir: Path, project_name: str
) -> None:
    from gitdock.runtime.converge import BuildsRefused
    from gitdock.runtime.trust.policy import BuildAction, DefaultAction, TrustPolicy
    from gitdock.runtime.trust.registry import RegistryClient
    from gitdock.runtime.trust.resolve import TrustContext

    project = load_project([str(project_dir / "compose.yaml")], project_name=project_name, environ={})
    policy = TrustPolicy(default=DefaultAction.ALLOW_UNSIGNED, build=BuildAction.DENY)
    with DockerClient() as docker, RegistryClient() as registry:
        with pytest.raises(BuildsRefused, match="service api, service web: built from the revision"):
            converge(project, docker, trust=TrustContext(policy, registry), revision=REVISION)
        assert docker.mutating_calls == 0
    assert container_ids(project_name) == {}
    assert docker_cli("network", "ls", "-q", "--filter", f"label=io.gitdock.project={project_name}") == ""


RUNNING = f"""
services:
  db:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    environment: {{MODE: "1"}}
"""
NEEDS_BUILDKIT = f"""
services:
  db:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    environment: {{MODE: "2"}}
  web:
    build:
      context: ./web
      secrets: [token]
secrets:
  token:
    file: ./token.txt
"""


def cli(project_dir: Path, name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *argv, "-f", str(project_dir / "compose.yaml"), "-p", name],
        capture_output=True,
        text=True,
        env={**os.environ, "TERM": "dumb"},
        timeout=300,
    )


def test_a_build_needing_buildkit_plans_and_apply_refuses_it_before_anything_changes(
    tmp_path: Path, project_name: str
) -> None:
    (tmp_path / "compose.yaml").write_text(RUNNING)
    assert cli(tmp_path, project_name, "apply").returncode == 0
    before = container_ids(project_name)
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "Dockerfile").write_text(
        f"FROM {TEST_IMAGE}\nRUN --mount=type=secret,id=token cat /run/secrets/token\n"
    )
    (tmp_path / "token.txt").write_text("s3cret-build-token\n")
    (tmp_path / "compose.yaml").write_text(NEEDS_BUILDKIT)  # db changes too: it would be recreated

    plan = cli(tmp_path, project_name, "plan")
    assert plan.returncode == 0, plan.stderr
    assert "build:web, BuildImage, not found" in plan.stdout
    assert "service:db:1, RecreateContainer" in plan.stdout
    warning = next(line for line in plan.stdout.splitlines() if line.startswith("warning:"))
    assert "services.web.build.secrets: `secrets` needs BuildKit" in warning
    assert warning.endswith("apply will refuse to build it")

    result = cli(tmp_path, project_name, "apply")
    assert result.returncode == 1, result
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1, result.stderr
    assert error[0].startswith("error: build:web: BuildImage failed: "), error
    assert "services.web.build.secrets: `secrets` needs BuildKit" in error[0]
    assert "Traceback" not in result.stderr
    assert "s3cret-build-token" not in result.stdout + result.stderr + plan.stdout + plan.stderr
    assert container_ids(project_name) == before  # db was not recreated: the build came first
    assert all(state.endswith("running") for state in before.values())
