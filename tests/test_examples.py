"""Examples cannot rot: every ``examples/*/compose.yaml`` is loaded, planned, applied and checked.

The cold plan (on an empty host) is deterministic text, compared with
``tests/golden/examples/<name>.plan``; set GITDOCK_UPDATE_GOLDEN=1 to rewrite the files.
Then each example is applied to the real dockerd under a unique project name, its
behaviour checked, a second apply must plan nothing, and ``down --volumes`` removes it.
Examples publish fixed host ports, so they run one after the other.
"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from gitdock.runtime.converge import converge, tear_down
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.observe import ObservedState
from gitdock.runtime.plan import plan_project
from gitdock.specs import load_project
from gitdock.specs.model import Project
from support.docker import docker_cli
from support.gitserver import free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent.name for p in (REPO / "examples").glob("*/compose.yaml"))
GOLDEN = Path(__file__).resolve().parent / "golden" / "examples"


# Published ports the examples let the environment move (`${WEBAPP_PORT:-18080}`): the applied
# examples use free ports, so a `make demo` left running does not collide with the tests.
PORT_VARIABLES = {"webapp": "WEBAPP_PORT"}
PORTS = {name: free_port() for name in PORT_VARIABLES}


def load_example(name: str, project_name: str | None = None, *, moved_ports: bool = False) -> Project:
    # An empty environment: the plan must not depend on the shell it runs in.
    environ = {PORT_VARIABLES[name]: str(PORTS[name])} if moved_ports and name in PORT_VARIABLES else {}
    return load_project(
        [REPO / "examples" / name / "compose.yaml"], project_name=project_name, environ=environ
    )


def eventually(check: Callable[[], str], expected: str, timeout: float = 15.0) -> None:
    """Retry ``check`` until its output contains ``expected``."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = repr(exc)
        if expected in last:
            return
        time.sleep(0.3)
    raise AssertionError(f"expected {expected!r}, last got {last!r}")


def http_get(url: str) -> Callable[[], str]:
    def get() -> str:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - a fixed local URL
            return str(resp.read().decode())

    return get


def exec_in(container: str, *argv: str) -> str:
    return docker_cli("exec", container, *argv)


def test_examples_exist() -> None:
    assert {"webapp", "proxy", "hostnet", "migrate", "scaled", "configs-secrets"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_cold_plan_matches_golden(name: str) -> None:
    rendered = plan_project(load_example(name), ObservedState()).render() + "\n"
    golden = GOLDEN / f"{name}.plan"
    if os.environ.get("GITDOCK_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert rendered == golden.read_text()


def check_webapp(project: str) -> None:
    eventually(http_get(f"http://127.0.0.1:{PORTS['webapp']}/"), "<h1>Hello from gitdock</h1>")


def check_proxy(project: str) -> None:
    eventually(http_get("http://127.0.0.1:18081/cgi-bin/app1"), "app1")
    eventually(http_get("http://127.0.0.1:18081/cgi-bin/app2"), "app2")


def check_hostnet(project: str) -> None:
    eventually(http_get("http://127.0.0.1:18082/"), "host-agent")


def check_migrate(project: str) -> None:
    eventually(lambda: exec_in(f"{project}-app-1", "cat", "/data/schema"), "schema v3")


def check_scaled(project: str) -> None:
    running = docker_cli(
        "ps", "--filter", f"label=io.gitdock.project={project}", "--filter", "status=running", "-q"
    ).split()
    assert len(running) == 3

    def workers() -> str:
        out = exec_in(f"{project}-worker-1", "nslookup", "workers")
        answers = out.split("Name:", 1)[-1]
        return f"{answers.count('Address')} addresses"

    eventually(workers, "3 addresses")


def check_configs_secrets(project: str) -> None:
    app = f"{project}-app-1"

    def stat(path: str) -> str:
        return exec_in(app, "stat", "-c", "%a %u %g", path).strip()

    assert exec_in(app, "cat", "/etc/app/app.conf") == "listen = 8080\nlog_level = info\n"
    assert exec_in(app, "cat", "/etc/app/banner.txt") == "Welcome to configs-secrets\n"
    assert stat("/etc/app/banner.txt") == "440 0 0"
    assert exec_in(app, "cat", "/run/secrets/db-password") == "example-db-password\n"
    assert exec_in(app, "cat", "/run/secrets/api-token") == "example-api-token"
    assert stat("/run/secrets/api-token") == "400 1000 1000"
    # A file source is bind-mounted read-only, as in Compose.
    assert "Read-only" in docker_cli(
        "exec", app, "sh", "-c", "(echo x > /run/secrets/db-password) 2>&1 || true"
    )


CHECKS: dict[str, Callable[[str], None]] = {
    "webapp": check_webapp,
    "proxy": check_proxy,
    "hostnet": check_hostnet,
    "migrate": check_migrate,
    "scaled": check_scaled,
    "configs-secrets": check_configs_secrets,
}


@pytest.mark.docker
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_applies_behaves_and_is_stable(name: str, project_name: str) -> None:
    check = CHECKS.get(name)
    assert check is not None, f"examples/{name} has no behaviour check: add one to CHECKS"
    project = load_example(name, project_name, moved_ports=True)
    with DockerClient() as docker:
        try:
            outcome = converge(project, docker)
            assert outcome.report is not None
            assert outcome.report.ok, [(r.op.render(), r.error) for r in outcome.report.failed]
            check(project_name)
            again = converge(load_example(name, project_name, moved_ports=True), docker)
            assert again.plan.is_empty, again.plan.render()
            assert again.mutating_calls == 0
        finally:
            down = tear_down(project_name, docker, remove_volumes=True)
    assert down.report is None or down.report.ok
    assert docker_cli("ps", "-aq", "--filter", f"label=io.gitdock.project={project_name}").strip() == ""
