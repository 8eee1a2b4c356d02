"""The no-op apply's start-up path: what a short command imports, and what it asks Docker.

The figures (how long it takes) are tests/bench/bench_floor.py's; nothing here is timed. What
is asserted is what makes it short: a repeated apply reuses the validated load, so neither the
validator (pydantic, the YAML reader) nor anything only other commands use (the Swarm runtime,
the signature code, OpenTelemetry) is imported; its GETs over the unix socket need no HTTP
library (httpx, httpcore, h11, http.client and the email parser it brings), and the Docker
calls are the five of a snapshot. A first apply imports no crypto, tracing or HTTP library,
and a traced one still exports its trace although the command skips the interpreter's teardown.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from support.docker import TEST_IMAGE, write_compose
from support.otlp_receiver import OTLPReceiver

# Top-level packages (or gitdock modules) a no-op apply must not import.
NOT_ON_THE_NOOP_PATH = (
    "pydantic",
    "pydantic_core",
    "yaml",
    "click",
    "rich",
    "pygments",
    "cryptography",
    "opentelemetry",
    "gitdock.specs.load",
    "gitdock.specs.schema",
    "gitdock.specs.validate",
    "gitdock.runtime.swarm",
    "gitdock.runtime.health",  # only a gated recreate or --wait uses it
    "gitdock.runtime.trust.verify",
    "gitdock.runtime.trust.registry",
    "gitdock.runtime.trust.signature",
    "gitdock.agent.telemetry",
    "httpx",  # plain GETs over the unix socket are runtime.docker's own (_over_unix)
    "httpcore",
    "h11",
    "http.client",
    "email",
    "urllib.request",
    "gitdock.runtime.dial",  # ssh only
    "tarfile",  # build contexts only
)


def apply(
    compose: Path, project: str, state: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``gitdock apply`` as a process (``python -m``, the command's own path); ``env`` adds to
    the environment, from which the OTEL_* variables are taken out."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, *flags, "-m", "gitdock.agent.cli.main", "apply", "-f", str(compose), "-p", project],
        capture_output=True,
        text=True,
        env={**base, "GITDOCK_STATE_DIR": str(state), **(env or {})},
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def idle_web(tmp_path: Path, *, volume: bool = False) -> Path:
    """A Compose file of one idle service (with a named volume when asked)."""
    mounts = "\n    volumes: [data:/data]\nvolumes:\n  data: {}" if volume else ""
    return write_compose(
        tmp_path,
        f"""services:
  web:
    image: {TEST_IMAGE}
    init: true
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done"]{mounts}
""",
    )


def imported_modules(importtime_stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    return {m[1] for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", importtime_stderr, re.M)}


def within(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The ``modules`` that are one of ``packages`` or inside one, sorted."""
    return sorted(m for m in modules if any(m == p or m.startswith(f"{p}.") for p in packages))


@pytest.mark.docker
def test_noop_apply_imports_nothing_it_does_not_use(tmp_path: Path, project_name: str) -> None:
    compose = idle_web(tmp_path, volume=True)
    state = tmp_path / "state"
    apply(compose, project_name, state)  # cold: loads, validates and stores the load
    result = apply(compose, project_name, state, "-X", "importtime")

    assert "nothing to change (5 Docker API calls, 0 mutating)" in result.stdout
    modules = imported_modules(result.stderr)
    assert "gitdock.runtime.observe" in modules  # the parse works: the path itself is there
    assert within(modules, NOT_ON_THE_NOOP_PATH) == []


# What a first apply (a validated load, containers created) still does not need: the
# signature and SOPS crypto, tracing, the Swarm runtime, an HTTP library for a local engine;
# without an encrypted file the SOPS reader and its keyring (which runs age or gpg), and
# without a policy the admission checks.
NOT_ON_THE_FIRST_APPLY_PATH = (
    "gitdock.specs.sops",
    "gitdock.specs.keyring",
    "subprocess",
    "gitdock.runtime.admission",
    "cryptography",
    "opentelemetry",
    "gitdock.agent.telemetry",
    "gitdock.runtime.swarm",
    "gitdock.runtime.trust.verify",
    "gitdock.runtime.trust.signature",
    "httpx",
    "httpcore",
    "tarfile",
)


@pytest.mark.docker
def test_a_validating_apply_imports_no_crypto_tracing_or_http(tmp_path: Path, project_name: str) -> None:
    compose = idle_web(tmp_path, volume=True)
    result = apply(compose, project_name, tmp_path / "state", "-X", "importtime")

    assert "operation(s) done" in result.stdout
    modules = imported_modules(result.stderr)
    assert {"pydantic", "gitdock.specs.schema", "gitdock.specs.validate"} <= modules  # it validated
    assert within(modules, NOT_ON_THE_FIRST_APPLY_PATH) == []


@pytest.mark.docker
def test_a_traced_apply_delivers_its_trace_before_the_process_ends(tmp_path: Path, project_name: str) -> None:
    """The command ends without the interpreter's teardown (cli.entry.leave); the exporter's
    flush at exit still runs: with the batch delay at a minute, only that flush sends."""
    compose = idle_web(tmp_path)
    with OTLPReceiver() as receiver:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "60000",
        }
        apply(compose, project_name, tmp_path / "state", env=otel)
        names = {span.name for span in receiver.wait_for_spans(2, timeout=5.0)}
    assert {f"SYNC {project_name}", "CreateContainer service:web:1", "plan", "execute"} <= names


def test_the_cli_loads_a_project_inside_its_git_work_tree(tmp_path: Path) -> None:
    """A file the project shares from elsewhere in its repository loads from the CLI as it does
    from the agent's checkout; outside any work tree the first file's directory is the root."""
    from gitdock.agent.cli.project import project_root
    from gitdock.specs import SpecError, load_project

    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "shared.env").write_text("A=1\n")
    deploy = tmp_path / "repo" / "deploy"
    deploy.mkdir()
    compose = deploy / "compose.yaml"
    compose.write_text("services:\n  web:\n    image: busybox\n    env_file: ../shared.env\n")
    root = project_root(str(compose))
    assert root == str(tmp_path / "repo")
    assert dict(load_project([compose], environ={}, root=root).services[0].environment)["A"] == "1"
    (tmp_path / "repo" / ".git").rmdir()
    assert project_root(str(compose)) is None
    with pytest.raises(SpecError, match="is outside the project directory"):
        load_project([compose], environ={}, root=project_root(str(compose)))


@pytest.mark.docker
def test_the_early_observe_is_the_only_one_dockerd_sees(tmp_path: Path, project_name: str) -> None:
    """``gitdock apply`` sends its observe before the command line imports (cli.early) and the
    apply waits for that one: through a counting proxy, dockerd sees the five calls the apply
    reports, not an early observe and then another."""
    from bench.bench_converge import CountingProxy

    from support.docker import docker_host

    compose = idle_web(tmp_path)
    state = tmp_path / "state"
    apply(compose, project_name, state)
    proxy = CountingProxy(docker_host())
    try:
        result = apply(compose, project_name, state, env={"DOCKER_HOST": proxy.url})
    finally:
        proxy.close()
    assert "nothing to change (5 Docker API calls, 0 mutating)" in result.stdout
    assert sum(proxy.requests.values()) == 5, proxy.requests
    assert {"GET /containers/json", "GET /networks", "GET /volumes", "GET /images/json"} <= set(
        proxy.requests
    )
