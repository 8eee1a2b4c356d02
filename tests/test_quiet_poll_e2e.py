"""A poll of an unmoved revision reuses its last look at the host while nothing has happened.

The agent's events watcher follows dockerd's events. While both its streams stay connected
and no event arrives, the host cannot have changed in any way the list calls would show, so a
scheduled poll plans and checks drift from the previous poll's snapshot and makes no Docker
call at all (the cost of that check no longer grows with the containers on the host). Any
event — a container stopped by hand, a local tag moved — ends the quiet period, and the next
poll looks again and sees it. Against the real dockerd and a real git repository.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.docker import TEST_IMAGE, docker_cli, remove_project
from support.gitserver import Upstream

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 3' TERM; while :; do sleep 1; done"  # a stop is a crash to the planner


def compose() -> str:
    return f'services:\n  web:\n    image: {TEST_IMAGE}\n    command: ["sh", "-c", "{LOOP}"]\n'


def eventually(check: Callable[[], bool], what: str, limit: float = 60.0) -> None:
    """Poll ``check`` until it holds; the limit only guards against a hang."""
    give_up = time.monotonic() + limit
    while not check():
        assert time.monotonic() < give_up, f"never: {what}"
        time.sleep(0.05)


@pytest.fixture
def agent_parts(tmp_path: Path, project_name: str) -> Iterator[tuple[Any, Any, list[Any]]]:
    from gitdock.agent.config import parse_config
    from gitdock.agent.git import GitCache
    from gitdock.agent.reconcile import Reconciler
    from gitdock.agent.state import StateStore
    from gitdock.runtime.docker import DockerClient
    from gitdock.runtime.drift.watch import EventWatcher

    upstream = Upstream(tmp_path / "repos" / "app.git")
    upstream.commit({"compose.yaml": compose()}, "first")
    text = (
        f"state_dir: {tmp_path / 'state'}\n"
        f"sources:\n  - {{name: app, url: '{upstream.url}', project: {project_name}, drift: report}}\n"
    )
    config = parse_config(text, str(tmp_path / "agent.yaml"))
    store = StateStore(tmp_path / "state.db")
    events: list[Any] = []
    try:
        with DockerClient() as docker:
            watcher = EventWatcher(docker, [project_name], on_event=events.append, idle_timeout=0.3)
            reconciler = Reconciler(config, store, GitCache(tmp_path / "cache"), docker)
            reconciler.watcher = watcher
            with watcher:
                yield reconciler, watcher, events
            reconciler.close()
    finally:
        store.close()


def calls_of(reconciler: Any, trigger: Any) -> tuple[str, int]:
    """One reconcile: its reason and the Docker API calls it made."""
    before = sum(reconciler.docker.calls.values())
    result = reconciler.reconcile(reconciler.config.sources[0], trigger)
    return result.reason, sum(reconciler.docker.calls.values()) - before


def applied_and_quiet(reconciler: Any, watcher: Any) -> int:
    """Both streams connected, the project applied, then polls until one reuses its look."""
    from gitdock.agent.state import Trigger

    eventually(lambda: watcher.quiet_token() is not None, "both event streams connected")
    assert calls_of(reconciler, Trigger.MANUAL)[0] == "ReconciliationSucceeded"
    return quiet_poll(reconciler)


def quiet_poll(reconciler: Any) -> int:
    """Scheduled polls until one makes no Docker call (the apply's own events settle first);
    returns how many polls looked at the host before it."""
    from gitdock.agent.state import Trigger

    for looked in range(100):
        reason, calls = calls_of(reconciler, Trigger.SCHEDULE)
        assert reason == "UpToDate", reason
        if calls == 0:
            return looked
        time.sleep(0.1)
    raise AssertionError("every poll looked at the host: the last look was never reused")


def test_a_quiet_host_is_not_listed_again_and_any_event_ends_the_quiet(
    agent_parts: tuple[Any, Any, list[Any]], project_name: str
) -> None:
    from gitdock.agent.reconcile import DEEP_CHECK_EVERY
    from gitdock.agent.state import Trigger

    reconciler, watcher, events = agent_parts
    assert applied_and_quiet(reconciler, watcher) >= 1  # the poll after an apply looks
    # Quiet from here on: no call, but every DEEP_CHECK_EVERY-th check looks (and inspects).
    memo = reconciler.memo("app")
    for _ in range(DEEP_CHECK_EVERY + 1):
        deep = (memo.drift_checks + 1) % DEEP_CHECK_EVERY == 1
        reason, calls = calls_of(reconciler, Trigger.SCHEDULE)
        assert reason == "UpToDate"
        assert calls >= 5 if deep else calls == 0, (deep, calls)

    # A stop by hand: its events end the quiet period; the next poll lists and sees it.
    token = watcher.quiet_token()
    docker_cli("stop", f"{project_name}-web-1")
    eventually(lambda: watcher.quiet_token() != token, "the stop's events reached the watcher")
    assert any(e.action == "die" for e in events)
    reason, calls = calls_of(reconciler, Trigger.SCHEDULE)
    assert reason == "DriftDetected" and calls >= 4  # the four list calls, at least


def test_a_moved_local_tag_ends_the_quiet_period(
    agent_parts: tuple[Any, Any, list[Any]], project_name: str
) -> None:
    from gitdock.agent.state import Trigger

    reconciler, watcher, _events = agent_parts
    applied_and_quiet(reconciler, watcher)
    token = watcher.quiet_token()
    tag = f"gitdock-test/{project_name}:moved"
    docker_cli("tag", TEST_IMAGE, tag)
    try:
        eventually(lambda: watcher.quiet_token() != token, "the tag event reached the watcher")
        reason, calls = calls_of(reconciler, Trigger.SCHEDULE)
        assert reason == "UpToDate" and calls >= 4
    finally:
        docker_cli("rmi", tag)


def test_a_trigger_other_than_the_schedule_always_looks(
    agent_parts: tuple[Any, Any, list[Any]],
) -> None:
    from gitdock.agent.state import Trigger

    reconciler, watcher, _events = agent_parts
    applied_and_quiet(reconciler, watcher)
    for trigger in (Trigger.MANUAL, Trigger.DRIFT, Trigger.WEBHOOK):
        reason, calls = calls_of(reconciler, trigger)
        assert reason == "UpToDate" and calls >= 4, trigger


def test_a_lost_events_stream_means_looking_again(tmp_path: Path) -> None:
    """Without both streams connected there is no token: nothing may be reused."""
    from gitdock.runtime.docker import DockerClient
    from gitdock.runtime.drift.watch import EventWatcher

    with DockerClient(f"unix://{tmp_path / 'nothing.sock'}", timeout=1.0) as docker:
        watcher = EventWatcher(docker, ["x"], on_event=lambda e: None, idle_timeout=0.2, max_backoff=0.2)
        with watcher:
            time.sleep(0.5)
            assert watcher.quiet_token() is None
    assert watcher.quiet_token() is None  # stopped


def test_the_sources_of_one_engine_share_its_last_look(tmp_path: Path, project_name: str) -> None:
    """Two sources on one engine: once both are quiet, neither poll makes a call, and the
    reconciler holds one snapshot of the host, not one per source."""
    from gitdock.agent.config import parse_config
    from gitdock.agent.git import GitCache
    from gitdock.agent.reconcile import Reconciler
    from gitdock.agent.state import StateStore, Trigger
    from gitdock.runtime.docker import DockerClient
    from gitdock.runtime.drift.watch import EventWatcher

    names = [f"{project_name}-a", f"{project_name}-b"]
    lines = []
    for i, name in enumerate(names):
        upstream = Upstream(tmp_path / "repos" / f"app{i}.git")
        upstream.commit({"compose.yaml": compose()}, "first")
        lines.append(f"  - {{name: app{i}, url: '{upstream.url}', project: {name}}}\n")
    config = parse_config(f"state_dir: {tmp_path / 'state'}\nsources:\n{''.join(lines)}", "agent.yaml")
    store = StateStore(tmp_path / "state.db")
    try:
        with DockerClient() as docker:
            watcher = EventWatcher(docker, names, on_event=lambda e: None, idle_timeout=0.3)
            reconciler = Reconciler(config, store, GitCache(tmp_path / "cache"), docker)
            reconciler.watcher = watcher
            with watcher:
                eventually(lambda: watcher.quiet_token() is not None, "both event streams connected")
                for source in config.sources:
                    assert reconciler.reconcile(source, Trigger.MANUAL).reason == "ReconciliationSucceeded"

                def both_quiet() -> bool:
                    calls = []
                    for source in config.sources:
                        before = sum(docker.calls.values())
                        assert reconciler.reconcile(source, Trigger.SCHEDULE).reason == "UpToDate"
                        calls.append(sum(docker.calls.values()) - before)
                    return calls == [0, 0]

                eventually(both_quiet, "both sources poll without a Docker call")
                look = reconciler._look
                assert look is not None
                assert {c.project for c in look[1].containers} >= set(names)  # one look, both projects
            reconciler.close()
    finally:
        store.close()
        for name in names:
            remove_project(name)
