"""The events watcher against real daemons: delivery, muting gitdock's own apply, and
resuming with `since` after dockerd restarts (on a private second dockerd, never the shared one)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient
from gitdock.runtime.drift.detect import DockerEvent, DriftField
from gitdock.runtime.drift.watch import EventWatcher, check_drift
from gitdock.runtime.observe import observe
from gitdock.runtime.record import applied_record
from gitdock.specs import load_project
from gitdock.specs.model import Project
from support.docker import TEST_IMAGE, docker_cli, write_compose
from support.dockerd import SecondDockerd

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(tmp_path: Path, name: str) -> Project:
    text = f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
        volumes:
          data: {{}}
    """
    return load_project([write_compose(tmp_path, text)], project_name=name)


class Collector:
    def __init__(self) -> None:
        self.events: list[DockerEvent] = []
        self.cond = threading.Condition()

    def __call__(self, event: DockerEvent) -> None:
        with self.cond:
            self.events.append(event)
            self.cond.notify_all()

    def wait_for(self, match: Callable[[DockerEvent], bool], timeout: float = 60) -> DockerEvent:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if match(e):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e.type, e.action, e.name) for e in self.events]
                    raise AssertionError(f"no matching event within {timeout}s; saw {seen}")
                self.cond.wait(left)


@pytest.fixture
def second_dockerd() -> Iterator[SecondDockerd]:
    reason = SecondDockerd.unavailable_reason()
    if reason:
        pytest.skip(reason)
    daemon = SecondDockerd()
    try:
        daemon.start()
        daemon.load_test_image()
        yield daemon
    finally:
        daemon.close()


def test_watcher_delivers_project_events_and_mutes_gitdock_applies(tmp_path: Path, project_name: str) -> None:
    project = compose(tmp_path, project_name)
    web = f"{project_name}-web-1"
    got = Collector()
    with DockerClient() as docker:
        converge(project, docker)
        watcher = EventWatcher(docker, project_name, got)
        with watcher:
            assert watcher.connected.wait(60) and watcher.is_alive
            # Inside a pause window (an apply): killed, then started again by converge.
            watcher.pause(project_name)
            docker_cli("kill", web)
            assert converge(project, docker).plan.render().endswith("StartContainer, exited (137)")
            watcher.resume(project_name)
            time.sleep(0.5)
            assert got.events == []
            # A change by hand is delivered, and only the project's events are.
            docker_cli("stop", web)
            stop = got.wait_for(lambda e: e.action == "stop" and e.name == web)
            assert stop.project == project_name
            docker_cli("volume", "rm", f"{project_name}_data")
            gone = got.wait_for(lambda e: e.type == "volume" and e.action == "destroy")
            assert (gone.name, gone.project) == (f"{project_name}_data", project_name)
            assert {e.project for e in got.events} == {project_name}
    assert not watcher.is_alive


# httpcore 1.0 does not close the socket of a unix connect that fails (sync.py
# connect_unix_socket); racing a dying dockerd can leave one for the GC to warn about.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_watcher_resumes_with_since_after_dockerd_restarts(
    tmp_path: Path, second_dockerd: SecondDockerd
) -> None:
    name = "gdt-restart"
    project = compose(tmp_path, name)
    web = f"{name}-web-1"
    got = Collector()
    gate = threading.Event()
    reconnected_at: list[float] = []

    def on_reconnect(since: float) -> None:
        reconnected_at.append(since)
        gate.wait(30)  # hold the stream closed until the change by hand has happened

    with DockerClient(second_dockerd.host) as docker:
        converge(project, docker)
        record = applied_record(project, observe(docker), applied_at=time.time())
        watcher = EventWatcher(docker, name, got, on_reconnect=on_reconnect, max_backoff=0.5)
        with watcher:
            assert watcher.connected.wait(60)
            second_dockerd.docker("pause", web)
            got.wait_for(lambda e: e.action == "pause")
            second_dockerd.docker("unpause", web)
            got.wait_for(lambda e: e.action == "unpause")

            second_dockerd.restart()
            # dockerd is back; the watcher has not reopened its stream (the gate holds it).
            second_dockerd.docker("stop", web)
            assert not any(e.action == "stop" for e in got.events)
            gate.set()
            stop = got.wait_for(lambda e: e.action == "stop" and e.name == web)
            assert watcher.reconnects >= 1
            assert reconnected_at and reconnected_at[0] * 1e9 < stop.time_ns
            # The replayed events explain the drift.
            report = check_drift(docker, record, events=got.events)
            (item,) = report.items
            assert (item.field, item.live) == (DriftField.STATE, "exited (0)")
            assert item.what.startswith("stopped by hand at ")
