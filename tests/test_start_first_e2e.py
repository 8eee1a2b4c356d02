"""Start-first updates on the real dockerd: a scaled service never drops below its replicas.

A sampler thread lists the project's running containers every 100 ms while `gitdock apply`
replaces a 3-replica service with ``update_config: {order: start-first, parallelism: 1}``;
a replacement that fails its health gate with ``failure_action: rollback`` leaves the three
old replicas running; the default (stop-first) still replaces a ``container_name`` service.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gitdock.runtime.docker import DockerClient
from support.docker import TEST_IMAGE, docker_host, write_compose
from support.faults import project_containers, run_gitdock

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
# Each new container counts itself in the shared volume; the third one fails ($$: Compose's $).
THIRD_FAILS = (
    "n=$$(cat /state/n 2>/dev/null || echo 0); n=$$((n+1)); echo $$n > /state/n; "
    f"if [ $$n -ge 3 ]; then exit 1; fi; {LOOP}"
)


def compose(rev: str, command: str = LOOP, action: str = "pause") -> str:
    return f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{command}"]
            environment: {{REV: "{rev}"}}
            volumes: [state:/state]
            deploy:
              replicas: 3
              update_config: {{order: start-first, parallelism: 1, monitor: 1s, failure_action: {action}}}
        volumes:
          state: {{}}
    """


class Sampler:
    """Counts the project's running ``web`` containers every 100 ms until stopped."""

    def __init__(self, project: str) -> None:
        self.filters = {
            "label": [f"io.gitdock.project={project}", "io.gitdock.service=web"],
            "status": ["running"],
        }
        self.counts: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with DockerClient(docker_host()) as client:
            while not self.stop.wait(0.1):
                self.counts.append(len(client.list_containers(self.filters)))


@contextmanager
def sampled(project: str) -> Iterator[Sampler]:
    sampler = Sampler(project)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        yield sampler
    finally:
        sampler.stop.set()
        thread.join()


def apply(f: Path, project: str) -> tuple[int, str]:
    result = run_gitdock("apply", "-f", str(f), "-p", project)
    return result.returncode, result.stdout + result.stderr


def web(project: str) -> list[tuple[str, str, str]]:
    """(name, state, REV) of each web container."""
    return [
        (c.name, c.state, next((e for e in c.env if e.startswith("REV=")), ""))
        for c in project_containers(project)
        if c.service == "web"
    ]


def test_start_first_update_never_has_fewer_than_three_running(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, compose("1"))
    assert apply(f, project_name)[0] == 0
    f.write_text(compose("2"))
    plan = run_gitdock("plan", "-f", str(f), "-p", project_name).stdout
    assert "[#1] -> #2 service:web:2, RecreateContainer, config changed: environment (start-first)" in plan
    with sampled(project_name) as sampler:
        code, out = apply(f, project_name)
    assert code == 0, out
    assert len(sampler.counts) > 10, "the sampler must have seen the whole update"
    assert min(sampler.counts) >= 3, sampler.counts
    assert max(sampler.counts) == 4, "each replacement runs beside the old one before it stops"
    names = [f"{project_name}-web-{n}" for n in (1, 2, 3)]
    assert web(project_name) == [(name, "running", "REV=2") for name in names]


def test_failed_replacement_rolls_back_the_replaced_replicas(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, compose("1", action="rollback"))
    assert apply(f, project_name)[0] == 0
    f.write_text(compose("2", command=THIRD_FAILS, action="rollback"))
    with sampled(project_name) as sampler:
        code, out = apply(f, project_name)
    assert code == 1, out
    assert "2 replica(s) rolled back to the old config" in out
    assert "Traceback" not in out
    assert min(sampler.counts) >= 3, sampler.counts
    names = [f"{project_name}-web-{n}" for n in (1, 2, 3)]
    assert web(project_name) == [(name, "running", "REV=1") for name in names]


def test_stop_first_default_still_replaces_a_container_name_service(
    tmp_path: Path, project_name: str
) -> None:
    def solo(rev: str) -> str:
        return f"""
            services:
              web:
                image: {TEST_IMAGE}
                container_name: {project_name}-solo
                command: ["sh", "-c", "{LOOP}"]
                environment: {{REV: "{rev}"}}
        """

    f = write_compose(tmp_path, solo("1"))
    assert apply(f, project_name)[0] == 0
    (before,) = project_containers(project_name)
    f.write_text(solo("2"))
    code, out = apply(f, project_name)
    assert code == 0, out
    (after,) = project_containers(project_name)
    assert after.id != before.id
    assert (after.name, after.state) == (f"{project_name}-solo", "running")
    assert "REV=2" in after.env
