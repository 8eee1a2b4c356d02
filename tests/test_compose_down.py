"""`gitdock down --volumes` removes what `docker compose down -v` removes, and nothing else.

Pure: the teardown plan, as golden text, from literal snapshots. End to end, on the real
dockerd: named project volumes, short-syntax and image ``VOLUME`` anonymous volumes (also the
ones a recreate carried over by name), an external volume kept; and the same file torn down
by docker-compose 1.29.2 leaves the same volumes behind.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitdock.runtime.labels import LABEL_NUMBER, LABEL_PROJECT, LABEL_SERVICE, LABEL_VOLUME
from gitdock.runtime.observe import ObservedContainer, ObservedState, ObservedVolume
from gitdock.runtime.plan import plan_down
from support.docker import TEST_IMAGE, write_compose
from support.faults import build_volume_image, docker, run_gitdock, volume_of

ANON = "a" * 64
SHARED = "b" * 64
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def container(name: str, *volumes: str, project: str = "demo") -> ObservedContainer:
    labels = {LABEL_PROJECT: project, LABEL_SERVICE: "web", LABEL_NUMBER: "1"} if project else {}
    return ObservedContainer(
        id=f"id-{name}", name=name, image="busybox", image_id="sha256:1", state="running",
        status="Up", labels=labels, networks={}, volumes=volumes,
    )  # fmt: skip


def snapshot() -> ObservedState:
    return ObservedState(
        containers=(
            container("demo-web-1", ANON, SHARED, "demo_data", "outside"),
            container("stranger", SHARED, project=""),
        ),
        volumes=(
            ObservedVolume(ANON, "local", {}),
            ObservedVolume(SHARED, "local", {}),
            ObservedVolume("demo_data", "local", {LABEL_PROJECT: "demo", LABEL_VOLUME: "data"}),
            ObservedVolume("outside", "local", {}),
            ObservedVolume("c" * 64, "local", {"com.docker.volume.anonymous": ""}),  # nobody's
        ),
    )


def test_down_volumes_removes_named_and_only_our_anonymous_volumes() -> None:
    plan = plan_down("demo", snapshot(), remove_volumes=True)
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:web:1, RemoveContainer, down",
            f"[#1] -> #2 volume:{ANON}, RemoveVolume, down --volumes, anonymous",
            "[#1] -> #3 volume:data, RemoveVolume, down --volumes",
        ]
    )
    assert plan.operations[0].remove_volumes, "Docker removes the container's anonymous volumes (?v=1)"


def test_down_without_volumes_keeps_anonymous_volumes_too() -> None:
    plan = plan_down("demo", snapshot())
    assert not plan.operations[0].remove_volumes
    assert plan.render() == "\n".join(
        [
            "[] -> #1 service:web:1, RemoveContainer, down",
            "warning: volume:data: kept (demo_data); use --volumes to remove named volumes",
        ]
    )


# -- the real dockerd -------------------------------------------------------------------------


def compose(image: str, rev: str, external: str) -> str:
    return f"""
        services:
          db:
            image: {image}
            command: ["sh", "-c", "{LOOP}"]
            environment: {{REV: "{rev}"}}
            volumes:
              - /cache
              - data:/named
              - outside:/outside
        volumes:
          data: {{}}
          outside:
            external: true
            name: {external}
    """


def volumes() -> set[str]:
    return set(docker("volume", "ls", "--quiet").split())


def mounted(name: str) -> dict[str, str]:
    """Destination -> volume name of a container's volume mounts."""
    info = json.loads(docker("inspect", name))[0]
    return {m["Destination"]: m["Name"] for m in info["Mounts"] if m["Type"] == "volume"}


@pytest.fixture
def external_volume(project_name: str) -> Iterator[str]:
    name = f"{project_name}-external"
    docker("volume", "create", name)
    yield name
    docker("volume", "rm", "--force", name)


def forget(names: set[str]) -> None:
    """Remove volumes a failed run left (they carry no project label the teardown finds)."""
    left = names & volumes()
    if left:
        docker("volume", "rm", "--force", *left)


@pytest.mark.docker
def test_down_volumes_removes_anonymous_volumes_after_a_recreate(
    tmp_path: Path, project_name: str, external_volume: str
) -> None:
    image = build_volume_image(TEST_IMAGE)
    f = write_compose(tmp_path, compose(image, "1", external_volume))
    name = f"{project_name}-db-1"
    seen: set[str] = set()
    try:
        assert run_gitdock("apply", "-f", str(f), "-p", project_name).returncode == 0
        seen |= set(mounted(name).values())
        f.write_text(f.read_text().replace('REV: "1"', 'REV: "2"'))
        result = run_gitdock("apply", "-f", str(f), "-p", project_name)
        assert result.returncode == 0, result.stderr
        after = mounted(name)
        assert after["/cache"] == volume_of(name, "/cache") and after["/cache"] in seen, "carried over"
        result = run_gitdock("down", "-f", str(f), "-p", project_name, "--volumes")
        assert result.returncode == 0, result.stderr
        left = volumes()
        assert after["/cache"] not in left and after["/data"] not in left, "anonymous volumes removed"
        assert after["/named"] not in left, "the named project volume removed"
        assert external_volume in left, "an external volume is never removed"
    finally:
        forget(seen - {external_volume})


def docker_compose(project: str, f: Path, *args: str) -> None:
    argv = ["docker-compose", "-p", project, "-f", str(f), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.docker
@pytest.mark.compose
def test_down_volumes_matches_docker_compose(tmp_path: Path, project_name: str, external_volume: str) -> None:
    image = build_volume_image(TEST_IMAGE)
    f = write_compose(tmp_path, compose(image, "1", external_volume))
    outcome: dict[str, tuple[int, int, bool]] = {}
    seen: set[str] = set()
    try:
        for tool, project, container_name in (
            ("docker-compose", f"{project_name}-dc", f"{project_name}-dc_db_1"),
            ("gitdock", project_name, f"{project_name}-db-1"),
        ):
            if tool == "docker-compose":
                docker_compose(project, f, "up", "-d")
            else:
                assert run_gitdock("apply", "-f", str(f), "-p", project).returncode == 0
            had = mounted(container_name)
            seen |= set(had.values())
            if tool == "docker-compose":
                docker_compose(project, f, "down", "-v")
            else:
                assert run_gitdock("down", "-f", str(f), "-p", project, "--volumes").returncode == 0
            left = volumes()
            kept = {dest for dest, vol in had.items() if vol in left}
            outcome[tool] = (len(had), len(kept), "/outside" in kept)
        assert outcome["gitdock"] == outcome["docker-compose"] == (4, 1, True)
    finally:
        forget(seen - {external_volume})
