"""What the agent mutes of its own changes, and what a reconcile plans from, on the real dockerd.

The event watcher drops a project's events stamped while gitdock changes it. That window is the
execute step only: a reconcile whose plan is empty mutes nothing, or a ``docker stop`` made by
hand while gitdock looks (its ``kill`` triggers the check, its ``die`` lands during the empty
converge) would be dropped as gitdock's own and never healed. And a reconcile on an unmoved
revision plans from the very snapshot its drift check judged, so a change landing between the
two looks is reported by the drift policy rather than healed by the plan behind its back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.docker import TEST_IMAGE, docker_cli
from support.gitserver import Upstream

pytestmark = pytest.mark.docker

# A stop ends it with status 3: a crash to the planner (it would start it again), unlike the
# status 0 of a finished job.
LOOP = "trap 'exit 3' TERM; while :; do sleep 1; done"


def compose(greeting: str) -> str:
    return (
        "services:\n"
        "  web:\n"
        f"    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n'
        f"    environment: {{GREETING: '{greeting}'}}\n"
    )


class RecordingWatcher:
    """The two calls the reconciler makes of its event watcher, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def pause(self, project: str) -> None:
        self.calls.append(("pause", project))

    def resume(self, project: str) -> None:
        self.calls.append(("resume", project))

    def quiet_token(self) -> None:
        return None  # no events stream here: every poll looks at the host afresh


@pytest.fixture
def reconciler_for(tmp_path: Path, project_name: str) -> Iterator[tuple[object, Upstream, RecordingWatcher]]:
    from gitdock.agent.config import parse_config
    from gitdock.agent.git import GitCache
    from gitdock.agent.reconcile import Reconciler
    from gitdock.agent.state import StateStore
    from gitdock.runtime.docker import DockerClient

    upstream = Upstream(tmp_path / "repos" / "app.git")
    upstream.commit({"compose.yaml": compose("1")}, "first")
    text = (
        f"state_dir: {tmp_path / 'state'}\n"
        f"sources:\n  - {{name: app, url: '{upstream.url}', project: {project_name}, drift: report}}\n"
    )
    config = parse_config(text, str(tmp_path / "agent.yaml"))
    store = StateStore(tmp_path / "state.db")
    watcher = RecordingWatcher()
    try:
        with DockerClient() as docker:
            reconciler = Reconciler(config, store, GitCache(tmp_path / "cache"), docker)
            reconciler.watcher = watcher  # type: ignore[assignment]
            yield reconciler, upstream, watcher
            reconciler.close()
    finally:
        store.close()


def test_only_a_plan_that_changes_something_mutes_the_watcher(
    reconciler_for: tuple[object, Upstream, RecordingWatcher], project_name: str
) -> None:
    from gitdock.agent.reconcile import Reconciler
    from gitdock.agent.state import Trigger

    reconciler, upstream, watcher = reconciler_for
    assert isinstance(reconciler, Reconciler)
    source = reconciler.config.sources[0]
    assert reconciler.reconcile(source, Trigger.MANUAL).reason == "ReconciliationSucceeded"
    muted = [("pause", project_name), ("resume", project_name)]
    assert watcher.calls == muted * 2  # the execute step, then the health gate's wait
    watcher.calls.clear()
    for _ in range(2):
        assert reconciler.reconcile(source, Trigger.SCHEDULE).reason == "UpToDate"
    assert watcher.calls == []  # nothing executed: nothing of the host's own events is dropped
    upstream.commit({"compose.yaml": compose("2")}, "second")
    assert reconciler.reconcile(source, Trigger.MANUAL).reason == "ReconciliationSucceeded"
    assert watcher.calls == muted * 2


def test_a_reconcile_plans_from_the_snapshot_its_drift_check_judged(
    reconciler_for: tuple[object, Upstream, RecordingWatcher], project_name: str
) -> None:
    from gitdock.agent.reconcile import Reconciler
    from gitdock.agent.state import Trigger
    from gitdock.runtime import converge as converge_module
    from gitdock.runtime.observe import observe

    reconciler, _upstream, _watcher = reconciler_for
    assert isinstance(reconciler, Reconciler)
    source = reconciler.config.sources[0]
    assert reconciler.reconcile(source, Trigger.MANUAL).reason == "ReconciliationSucceeded"
    running = observe(reconciler.docker)  # web runs
    docker_cli("stop", f"{project_name}-web-1")
    memo = reconciler.memo("app")
    project = reconciler.load(source, reconciler.fetch(source, reconciler.store.source("app"), memo), memo)
    from_snapshot = converge_module.converge(project, reconciler.docker, dry_run=True, observed=running)
    assert from_snapshot.plan.is_empty  # the stop happened after the look it plans from
    fresh = converge_module.converge(project, reconciler.docker, dry_run=True)
    assert [op.kind.value for op in fresh.plan.operations] == ["StartContainer"]
    # The reconcile itself looks once: drift (report policy) sees the stop and heals nothing.
    result = reconciler.reconcile(source, Trigger.SCHEDULE)
    assert result.reason == "DriftDetected", result
    state = docker_cli("inspect", "-f", "{{.State.Running}}", f"{project_name}-web-1").strip()
    assert state == "false"
