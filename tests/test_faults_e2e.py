"""The fault suite: real `gitdock apply` processes and a real agent, killed with SIGKILL at
seeded random points, and a private dockerd restarted mid-apply; afterwards a plain apply (or
the restarted agent) must converge: exactly one container per replica under its own name, all
running the latest config, no `_`-prefixed replacement left over, and the data in named,
anonymous and image-declared volumes intact. Also: a config Docker refuses at start leaves
the old container running, on both recreate paths (start-first and stop-first).

Trial counts are constants (``GITDOCK_FAULT_TRIALS`` scales them down for a quick run).
Measured on 2 shared cores: apply kills x50 about 4 min, agent kills x20 about 2 min,
dockerd restarts x10 about 1.5 min; the whole file about 8 min. The random delays are seeded,
so a failing trial reruns the same way. Nothing asserts on time: a delay only chooses where the kill lands.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support.agent import AgentProcess
from support.docker import TEST_IMAGE, write_compose
from support.dockerd import SecondDockerd
from support.faults import (
    apply_killed_after,
    build_volume_image,
    convergence_problems,
    docker,
    project_containers,
    read_file,
    run_gitdock,
    start_apply,
    timed_apply,
    write_file,
)
from support.gitserver import Upstream, free_port

pytestmark = pytest.mark.docker

_SCALE = float(os.environ.get("GITDOCK_FAULT_TRIALS", "1"))
APPLY_KILLS = max(1, round(50 * _SCALE))
AGENT_KILLS = max(1, round(20 * _SCALE))
DOCKERD_RESTARTS = max(1, round(10 * _SCALE))
SEED = 12
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def recreate_heavy(
    project: str, rev: int, port: int | None, db_image: str, *, network_mode: str = "", restart: str = "no"
) -> str:
    """Every service changes with ``rev``: three replicas on a shared writable volume, one with a
    container_name and host port that cannot be held twice, one on an image VOLUME (all are
    recreated stop-first, the old container put back on failure).

    ``network_mode`` (e.g. ``bridge``) keeps the containers off a project network: dockerd 20.10
    can keep a stale endpoint on a network whose container connect was cut off by a SIGKILL of
    the client, and then refuses to remove the network until it restarts — its defect, which no
    API call clears (`network disconnect -f` does not).

    ``port=None`` publishes no host port: dockerd 20.10 restarted (live-restore) while a
    container's start is in flight restores that endpoint's port mapping, then drops the endpoint
    as stale ("Removing stale endpoint ..." in its log) without releasing the port, so every later
    start on that port fails with "port is already allocated" until dockerd restarts again — its
    defect, seen here; gitdock reports it (the old container cannot start on that port either).

    ``restart`` is web's and db's policy. A dockerd stopped while none of its containers is
    running (an apply between stopping the old ones and starting the new) ignores live-restore
    and stops every container, and a container that exited 0 under ``restart: no`` is a finished
    job that gitdock leaves be (README); ``unless-stopped`` keeps a service across daemon restarts."""
    mode = f"\n            network_mode: {network_mode}" if network_mode else ""
    ports = f'\n            ports: ["127.0.0.1:{port}:8080"]' if port is not None else ""
    return f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            environment: {{REV: "{rev}"}}
            deploy: {{replicas: 3}}
            restart: "{restart}"
            volumes: [data:/data, /cache]{mode}
          fixed:
            image: {TEST_IMAGE}
            container_name: {project}-fixed
            command: ["sh", "-c", "{LOOP}"]
            environment: {{REV: "{rev}"}}{ports}
            restart: unless-stopped{mode}
          db:
            image: {db_image}
            restart: "{restart}"
            command: ["sh", "-c", "{LOOP}"]
            environment: {{REV: "{rev}"}}{mode}
        volumes:
          data: {{}}
    """


REPLICAS = {"web": 3, "fixed": 1, "db": 1}


def names(project: str) -> dict[tuple[str, int], str]:
    return {
        ("web", 1): f"{project}-web-1",
        ("web", 2): f"{project}-web-2",
        ("web", 3): f"{project}-web-3",
        ("fixed", 1): f"{project}-fixed",
        ("db", 1): f"{project}-db-1",
    }


def write_markers(project: str, host: str | None = None) -> None:
    write_file(f"{project}-web-1", "/data/marker", "named", host)
    for n in (1, 2, 3):
        write_file(f"{project}-web-{n}", "/cache/marker", f"cache-{n}", host)
    write_file(f"{project}-db-1", "/data/marker", "image-volume", host)


def data_problems(project: str, host: str | None = None) -> list[str]:
    want = {
        (f"{project}-web-1", "/data/marker"): "named",
        (f"{project}-db-1", "/data/marker"): "image-volume",
    }
    want |= {(f"{project}-web-{n}", "/cache/marker"): f"cache-{n}" for n in (1, 2, 3)}
    problems = []
    for (container, path), text in want.items():
        try:
            found = read_file(container, path, host)
        except RuntimeError as exc:
            found = str(exc)
        if found != text:
            problems.append(f"{container}:{path}: {found!r}")
    return problems


def apply_ok(f: Path, project: str, host: str | None = None) -> None:
    result = run_gitdock("apply", "-f", str(f), "-p", project, host=host)
    assert result.returncode == 0, f"recovery apply failed:\n{result.stdout}\n{result.stderr}"


def kill_trials(f: Path, project: str, trials: int, rng: random.Random, render: object) -> tuple[int, int]:
    """Kill an apply of rev i at a random point, then apply plainly; returns (recovered,
    trials in which the kill left the project unconverged, i.e. landed mid-apply)."""
    assert callable(render)
    args = ["-f", str(f), "-p", project]
    span = timed_apply(args)
    recovered = interrupted = 0
    for i in range(1, trials + 1):
        f.write_text(render(i))
        apply_killed_after(args, rng.uniform(0.2 * span, 1.1 * span))
        if convergence_problems(project, REPLICAS, names(project), f"REV={i}"):
            interrupted += 1
        apply_ok(f, project)
        problems = convergence_problems(project, REPLICAS, names(project), f"REV={i}")
        problems += data_problems(project)
        assert not problems, f"trial {i}: not converged after a plain apply: {problems}"
        recovered += 1
    return recovered, interrupted


# 50 apply kills: ~4 min on 2 shared cores, too close to the suite's 300 s per-test limit
@pytest.mark.timeout(1200)
def test_sigkill_of_apply_at_random_points_then_a_plain_apply_converges(
    tmp_path: Path, project_name: str
) -> None:
    db_image = build_volume_image(TEST_IMAGE)
    port = free_port()

    def render(rev: int) -> str:
        # On the default bridge: a kill mid-connect must not leave dockerd a stale endpoint on
        # a project network that no later run can remove (see recreate_heavy).
        return recreate_heavy(project_name, rev, port, db_image, network_mode="bridge")

    f = write_compose(tmp_path, render(0))
    apply_ok(f, project_name)
    write_markers(project_name)
    recovered, interrupted = kill_trials(f, project_name, APPLY_KILLS, random.Random(SEED), render)
    print(f"apply SIGKILL: {recovered}/{APPLY_KILLS} recovered, {interrupted} kills landed mid-apply")
    down = run_gitdock("down", "-f", str(f), "-p", project_name)  # waits for endpoints to go
    assert down.returncode == 0, down.stderr
    assert recovered == APPLY_KILLS
    assert interrupted > 0, "no kill landed mid-apply: the delays do not exercise the recreate"


# -- a config Docker refuses at start -------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


REFUSALS = {
    "unknown user": 'user: "nosuchuser"',
    "missing command": 'command: ["/no/such/binary"]',
    "unknown sysctl": "sysctls: {net.nosuch.key: 1}",
}


def service(project: str, extra: str, *, fixed: bool, port: int | None = None) -> str:
    lines = [
        "services:",
        "  app:",
        f"    image: {TEST_IMAGE}",
        f'    command: ["sh", "-c", "{LOOP}"]',
        "    restart: unless-stopped",
    ]
    if fixed:
        lines.append(f"    container_name: {project}-app")
    if port is not None:
        lines.append(f'    ports: ["127.0.0.1:{port}:8080"]')
    if extra:
        lines.append(f"    {extra}")
    return "\n".join(lines) + "\n"


def assert_old_still_runs(project: str, name: str, old_id: str) -> None:
    seen = project_containers(project)
    assert [(c.id, c.name, c.state) for c in seen] == [(old_id, name, "running")], seen


@pytest.mark.parametrize("fixed", [False, True], ids=["start-first", "stop-first"])
@pytest.mark.parametrize("refusal", sorted(REFUSALS))
def test_a_config_refused_at_start_leaves_the_old_container_running(
    tmp_path: Path, project_name: str, refusal: str, fixed: bool
) -> None:
    f = write_compose(tmp_path, service(project_name, "", fixed=fixed))
    apply_ok(f, project_name)
    name = f"{project_name}-app" if fixed else f"{project_name}-app-1"
    old_id = project_containers(project_name)[0].id
    f.write_text(service(project_name, REFUSALS[refusal], fixed=fixed))
    result = run_gitdock("apply", "-f", str(f), "-p", project_name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert_old_still_runs(project_name, name, old_id)


def test_a_host_port_in_use_leaves_the_old_container_running(
    tmp_path: Path, project_name: str, busy_port: int
) -> None:
    f = write_compose(tmp_path, service(project_name, "", fixed=False, port=free_port()))
    apply_ok(f, project_name)
    old_id = project_containers(project_name)[0].id
    f.write_text(service(project_name, "", fixed=False, port=busy_port))
    result = run_gitdock("apply", "-f", str(f), "-p", project_name)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert_old_still_runs(project_name, f"{project_name}-app-1", old_id)


# -- the agent, killed mid-reconcile --------------------------------------------------------


def agent_config(tmp_path: Path, project: str, url: str) -> tuple[Path, int]:
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        "defaults: {interval: 1s, jitter: 0.1s, debounce: 0.1s, settle: 0.2s}\n"
        "sources:\n"
        "  - name: app\n"
        f"    url: {url}\n"
        "    ref: main\n"
        "    path: deploy\n"
        f"    project: {project}\n"
    )
    return config, port


# 20 agent kills: ~2 min on 2 shared cores, too close to the suite's 300 s per-test limit
@pytest.mark.timeout(900)
def test_sigkill_of_the_agent_mid_reconcile_then_a_restart_converges(
    tmp_path: Path, project_name: str
) -> None:
    db_image = build_volume_image(TEST_IMAGE)
    port = free_port()
    upstream = Upstream(tmp_path / "repos" / "app.git")

    def files(rev: int) -> dict[str, str | bytes]:
        return {"deploy/compose.yaml": textwrap.dedent(recreate_heavy(project_name, rev, port, db_image))}

    sha = upstream.commit(files(0), "rev 0")
    config, api = agent_config(tmp_path, project_name, upstream.url)
    rng = random.Random(SEED)
    recovered = 0
    with AgentProcess(config, api) as agent:
        agent.wait_applied("app", sha, timeout=120)
        write_markers(project_name)
        for i in range(1, AGENT_KILLS + 1):
            sha = upstream.commit(files(i), f"rev {i}")
            agent.wait_for("the reconcile to start", _changing(project_name, i), timeout=60, interval=0.02)
            time.sleep(rng.uniform(0.0, 1.0))
            agent.kill()
            agent.start()
            agent.wait_applied("app", sha, timeout=120)
            problems = convergence_problems(project_name, REPLICAS, names(project_name), f"REV={i}")
            problems += data_problems(project_name)
            assert not problems, f"trial {i}: not converged after the agent restarted: {problems}"
            recovered += 1
    print(f"agent SIGKILL: {recovered}/{AGENT_KILLS} recovered")
    assert recovered == AGENT_KILLS


def _changing(project: str, rev: int) -> Callable[[], bool]:
    """Whether the agent has begun applying ``rev`` (some container carries it already)."""
    return lambda: any(f"REV={rev}" in c.env for c in project_containers(project))


# -- a private dockerd restarted mid-apply --------------------------------------------------


@pytest.fixture
def second_dockerd() -> Iterator[SecondDockerd]:
    reason = SecondDockerd.unavailable_reason()
    if reason is not None:
        pytest.fail(f"the dockerd restart trials need a private dockerd: {reason}")
    with SecondDockerd() as daemon:  # started on entry
        daemon.load_test_image()
        yield daemon


# 10 dockerd restarts: ~1.5 min on 2 shared cores, too close to the suite's 300 s per-test limit
@pytest.mark.timeout(900)
def test_dockerd_restarted_mid_apply_then_a_plain_apply_converges(
    tmp_path: Path, project_name: str, second_dockerd: SecondDockerd
) -> None:
    host = second_dockerd.host
    db_image = build_volume_image(TEST_IMAGE, host=host)
    port = None  # see recreate_heavy: dockerd leaks a port whose start its restart cut off

    def render(rev: int) -> str:
        return recreate_heavy(project_name, rev, port, db_image, restart="unless-stopped")

    f = write_compose(tmp_path, render(0))
    args = ["-f", str(f), "-p", project_name]
    span = timed_apply(args, host=host)
    write_markers(project_name, host)
    rng = random.Random(SEED)
    recovered = interrupted = 0
    for i in range(1, DOCKERD_RESTARTS + 1):
        f.write_text(render(i))
        proc = start_apply(args, host)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(rng.uniform(0.2 * span, 1.0 * span))
        second_dockerd.restart()
        proc.wait(120)
        if convergence_problems(project_name, REPLICAS, names(project_name), f"REV={i}", host):
            interrupted += 1
        apply_ok(f, project_name, host)
        problems = convergence_problems(project_name, REPLICAS, names(project_name), f"REV={i}", host)
        problems += data_problems(project_name, host)
        assert not problems, f"trial {i}: not converged after dockerd restarted: {problems}"
        recovered += 1
    print(f"dockerd restart: {recovered}/{DOCKERD_RESTARTS} recovered, {interrupted} left it unconverged")
    assert recovered == DOCKERD_RESTARTS
    assert docker("ps", "-q", host=host) != ""
