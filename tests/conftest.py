"""Shared fixtures: the dockerd check behind `@pytest.mark.docker` and per-test projects.

A test marked `docker` (or using `project_name`) skips with a reason when no dockerd
answers, and fails instead when GITDOCK_REQUIRE_DOCKER=1 or CI is true.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

import pytest

# pytest puts tests/ on sys.path (rootdir conftest, no __init__.py), so tests import
# helpers as `from support.docker import TEST_IMAGE, docker_cli`.
from support.docker import docker_host, is_docker_required, ping_docker, remove_project


def pytest_configure(config: pytest.Config) -> None:
    """Applies made by tests record their state in a throwaway directory, never the host's."""
    import os
    import tempfile

    os.environ["GITDOCK_STATE_DIR"] = tempfile.mkdtemp(prefix="gitdock-test-state-")


@pytest.fixture(scope="session")
def docker_unavailable_reason() -> str | None:
    """None when dockerd answers /_ping, else why not (asked once per session)."""
    return ping_docker()


def require_docker(reason: str | None) -> None:
    if reason is None:
        return
    message = f"dockerd not reachable at {docker_host()}: {reason}"
    if is_docker_required():
        pytest.fail(f"{message} (GITDOCK_REQUIRE_DOCKER=1 or CI is set, so this fails instead of skipping)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _check_docker_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("docker") is not None:
        require_docker(request.getfixturevalue("docker_unavailable_reason"))


def _short_test_name(name: str) -> str:
    name = re.sub(r"^test_", "", name.lower())
    name = re.sub(r"[^a-z0-9]+", "-", name).strip("-")
    return name[:20].rstrip("-") or "t"


@pytest.fixture
def project_name(request: pytest.FixtureRequest, docker_unavailable_reason: str | None) -> Iterator[str]:
    """A unique project name `gdt-<test>-<hex6>`; teardown removes all it labels or names.

    Cleanup uses the docker CLI, not gitdock, and covers both `io.gitdock.project`
    and docker-compose's `com.docker.compose.project`.
    """
    require_docker(docker_unavailable_reason)
    name = f"gdt-{_short_test_name(request.node.name)}-{secrets.token_hex(3)}"
    yield name
    remove_project(name)
