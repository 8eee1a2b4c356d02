"""One engine's reconciles share their looks at the host (``reconcile._SharedObserve``).

Against the real dockerd: reconciles looking at once cost at most two snapshots (the one
running and the one queued after it), each caller's snapshot is taken after it asked, and a
dockerd that cannot be reached fails every caller of the look.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gitdock.agent.reconcile import _SharedObserve
from gitdock.runtime.docker import DockerClient, DockerUnavailable
from gitdock.runtime.labels import LABEL_PROJECT
from gitdock.runtime.observe import ObservedState
from support.docker import TEST_IMAGE, docker_cli

pytestmark = pytest.mark.docker

LIST_CALLS = 4  # containers, networks, volumes, images


def list_calls(docker: DockerClient) -> int:
    return sum(docker.calls.values())


def test_looks_at_once_share_at_most_two_snapshots() -> None:
    docker = DockerClient(None, timeout=60.0)
    shared = _SharedObserve(docker)
    shared.observe()  # the client's first call also negotiates the API version
    calls0 = list_calls(docker)
    callers = 8
    barrier = threading.Barrier(callers)
    got: list[ObservedState] = []

    def look() -> None:
        barrier.wait()
        got.append(shared.observe())

    threads = [threading.Thread(target=look) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == callers
    assert len({id(snapshot) for snapshot in got}) <= 2
    assert list_calls(docker) - calls0 <= 2 * LIST_CALLS  # eight separate looks would make 32


def test_a_look_after_a_change_sees_it(project_name: str) -> None:
    docker = DockerClient(None, timeout=60.0)
    shared = _SharedObserve(docker)
    before = shared.observe()
    assert before.project_containers(project_name) == []
    docker_cli(
        "create", "--name", f"{project_name}-web-1", "--label", f"{LABEL_PROJECT}={project_name}", TEST_IMAGE
    )
    after = shared.observe()
    assert [c.name for c in after.project_containers(project_name)] == [f"{project_name}-web-1"]


def test_an_unreachable_dockerd_fails_every_caller(tmp_path: Path) -> None:
    shared = _SharedObserve(DockerClient(f"unix://{tmp_path / 'no.sock'}", timeout=5.0))
    errors: list[BaseException] = []

    def look() -> None:
        try:
            shared.observe()
        except DockerUnavailable as exc:
            errors.append(exc)

    threads = [threading.Thread(target=look) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 3
    assert "no.sock" in str(errors[0])
