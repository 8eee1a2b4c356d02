"""gitdock plan/apply/down/ps/logs against the real dockerd, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gitdock.runtime.converge import converge
from gitdock.runtime.docker import DockerClient
from gitdock.specs import load_project
from support.docker import TEST_IMAGE, TEST_IMAGE_2, EventStream, docker_cli, docker_events, write_compose

pytestmark = pytest.mark.docker

LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def gitdock(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=180,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


def inspect(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads(docker_cli("inspect", name))[0]  # type: ignore[no-any-return]


def ids(project: str) -> dict[str, str]:
    out = docker_cli(
        "ps", "-a", "--filter", f"label=io.gitdock.project={project}", "--format", "{{.Names}} {{.ID}}"
    )
    return dict(line.split() for line in out.splitlines() if line.strip())


def two_services(env_value: str = "1", extra: str = "") -> str:
    return f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            environment:
              GREETING: "{env_value}"
            volumes:
              - data:/data
          worker:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
        {extra}
        volumes:
          data: {{}}
    """


def test_cold_apply_creates_networks_volumes_and_containers(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, two_services())
    plan = ok(gitdock("plan", "-f", str(f), "-p", project_name))
    assert "[] -> #1 network:default, CreateNetwork, not found" in plan
    assert "service:web:1, CreateContainer, not found" in plan
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    assert set(ids(project_name)) == {f"{project_name}-web-1", f"{project_name}-worker-1"}
    web = inspect(f"{project_name}-web-1")
    assert web["State"]["Running"] is True
    assert "GREETING=1" in web["Config"]["Env"]
    assert web["Config"]["Labels"]["io.gitdock.project"] == project_name
    assert web["Config"]["Labels"]["io.gitdock.service"] == "web"
    assert f"{project_name}_default" in web["NetworkSettings"]["Networks"]
    assert "web" in web["NetworkSettings"]["Networks"][f"{project_name}_default"]["Aliases"]
    volume = json.loads(docker_cli("volume", "inspect", f"{project_name}_data"))[0]
    assert volume["Labels"]["io.gitdock.project"] == project_name


def test_noop_apply_makes_no_mutating_call(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, two_services())
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    before = ids(project_name)

    # In process: count the API calls the client made.
    with DockerClient() as docker:
        outcome = converge(load_project([f], project_name=project_name), docker)
    assert outcome.plan.is_empty
    assert outcome.mutating_calls == 0
    assert outcome.api_calls <= 6  # version + four list calls, whatever the project's size

    # As a user: the command says so, and dockerd saw no event for the project.
    since = time.time()
    out = ok(gitdock("apply", "-f", str(f), "-p", project_name))
    until = time.time() + 0.5
    assert f"project {project_name}: nothing to change" in out
    assert ", 0 mutating)" in out
    # Network and volume events carry no labels, so match every event on the project's name.
    assert [e for e in docker_events(since, until) if project_name in json.dumps(e)] == []
    assert ok(gitdock("plan", "-f", str(f), "-p", project_name, "--exit-code")).startswith(
        f"project {project_name} is up to date"
    )
    assert ids(project_name) == before


def test_changing_one_env_var_recreates_exactly_one_container(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, two_services("1"))
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    before = ids(project_name)
    write_compose(tmp_path, two_services("2"))
    plan = gitdock("plan", "-f", str(f), "-p", project_name, "--exit-code")
    assert plan.returncode == 2
    assert plan.stdout.strip() == "[] -> #1 service:web:1, RecreateContainer, config changed: environment"
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    after = ids(project_name)
    assert after[f"{project_name}-worker-1"] == before[f"{project_name}-worker-1"]
    assert after[f"{project_name}-web-1"] != before[f"{project_name}-web-1"]
    assert "GREETING=2" in inspect(f"{project_name}-web-1")["Config"]["Env"]


def test_removed_service_is_pruned_and_volume_data_survives(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, two_services("1"))
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    docker_cli("exec", f"{project_name}-web-1", "sh", "-c", "echo precious > /data/file")

    write_compose(tmp_path, two_services("2"))  # recreate web
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    assert docker_cli("exec", f"{project_name}-web-1", "cat", "/data/file").strip() == "precious"

    only_worker = f"""
        services:
          worker:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
    """
    write_compose(tmp_path, only_worker)
    plan = ok(gitdock("plan", "-f", str(f), "-p", project_name))
    assert "service:web:1, RemoveContainer, orphan" in plan
    assert "warning: volume:data: no longer in the project; kept" in plan
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    assert set(ids(project_name)) == {f"{project_name}-worker-1"}
    out = docker_cli("run", "--rm", "-v", f"{project_name}_data:/data", TEST_IMAGE, "cat", "/data/file")
    assert out.strip() == "precious"


def test_image_change_recreates_the_container(tmp_path: Path, project_name: str) -> None:
    f = write_compose(
        tmp_path, f'services:\n  app:\n    image: {TEST_IMAGE}\n    command: [sh, -c, "{LOOP}"]\n'
    )
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    write_compose(
        tmp_path, f'services:\n  app:\n    image: {TEST_IMAGE_2}\n    command: [sh, -c, "{LOOP}"]\n'
    )
    assert ok(gitdock("plan", "-f", str(f), "-p", project_name)).strip() == (
        "[] -> #1 service:app:1, RecreateContainer, image changed"
    )
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    assert docker_cli("exec", f"{project_name}-app-1", "cat", "/etc/gitdock-test-version").strip() == "2"


def test_unmanaged_container_with_colliding_name_is_left_untouched(tmp_path: Path, project_name: str) -> None:
    stranger = f"{project_name}-web-1"
    docker_cli("run", "-d", "--name", stranger, TEST_IMAGE, "sh", "-c", LOOP)
    stranger_id = inspect(stranger)["Id"]
    f = write_compose(tmp_path, two_services())
    result = gitdock("apply", "-f", str(f), "-p", project_name)
    try:
        assert result.returncode == 1
        assert f"container '{stranger}' exists and it is not managed by gitdock" in result.stderr
        assert "nothing was changed" in result.stderr
        assert ids(project_name) == {}  # not even the other service, nor a network
        assert docker_cli("network", "ls", "-q", "--filter", f"name={project_name}_default") == ""
        assert inspect(stranger)["Id"] == stranger_id
        assert inspect(stranger)["State"]["Running"] is True
    finally:
        docker_cli("rm", "-f", stranger)


def test_a_second_project_is_untouched_by_the_first(tmp_path: Path, project_name: str) -> None:
    other = f"{project_name}-other"
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    fa = write_compose(a, two_services())
    fb = write_compose(b, two_services())
    try:
        ok(gitdock("apply", "-f", str(fb), "-p", other))
        before = ids(other)
        ok(gitdock("apply", "-f", str(fa), "-p", project_name))
        write_compose(a, f'services:\n  solo:\n    image: {TEST_IMAGE}\n    command: [sh, -c, "{LOOP}"]\n')
        ok(gitdock("apply", "-f", str(fa), "-p", project_name))  # prunes web and worker of project A only
        ok(gitdock("down", "-p", project_name, "--volumes"))
        assert ids(other) == before
        assert all(inspect(n)["State"]["Running"] for n in before)
        assert docker_cli("volume", "ls", "-q", "--filter", f"name={other}_data").strip() == f"{other}_data"
    finally:
        ok(gitdock("down", "-p", other, "--volumes"))


def test_service_healthy_waits_for_health(tmp_path: Path, project_name: str) -> None:
    f = write_compose(
        tmp_path,
        f"""
        services:
          db:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "trap 'exit 0' TERM; sleep 2; touch /tmp/ready; while :; do sleep 1; done"]
            healthcheck:
              test: ["CMD", "test", "-f", "/tmp/ready"]
              interval: 500ms
              retries: 20
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            depends_on:
              db:
                condition: service_healthy
        """,
    )
    # dockerd's own events, in integer nanoseconds: the health Log keeps only the last 5 probes
    # (at 500 ms the first success rolls off 2.5 s later), and its RFC 3339 text drops trailing
    # zeros, so neither it nor a string comparison can tell when db turned healthy.
    db, web = f"{project_name}-db-1", f"{project_name}-web-1"
    with EventStream(f"io.gitdock.project={project_name}") as stream:
        ok(gitdock("apply", "-f", str(f), "-p", project_name))
        events = stream.wait_for(
            lambda seen: _has_event(seen, db, "health_status: healthy") and _has_event(seen, web, "start"),
            "db healthy and web started",
        )
    assert inspect(db)["State"]["Health"]["Status"] == "healthy"
    healthy_ns = min(_event_ns(e) for e in events if _is_event(e, db, "health_status: healthy"))
    started_ns = [_event_ns(e) for e in events if _is_event(e, web, "start")]
    assert len(started_ns) == 1 and started_ns[0] > healthy_ns, (started_ns, healthy_ns)


def _has_event(events: list[dict[str, Any]], container: str, action: str) -> bool:
    return any(_is_event(e, container, action) for e in events)


def _is_event(event: dict[str, Any], container: str, action: str) -> bool:
    actor = event.get("Actor")
    return (
        event.get("Action") == action
        and isinstance(actor, dict)
        and actor.get("Attributes", {}).get("name") == container
    )


def _event_ns(event: dict[str, Any]) -> int:
    return int(str(event["timeNano"]))


def test_service_healthy_gives_a_clear_error_on_timeout(tmp_path: Path, project_name: str) -> None:
    f = write_compose(
        tmp_path,
        f"""
        services:
          db:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            healthcheck:
              test: ["CMD", "test", "-f", "/tmp/never"]
              interval: 5s
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            depends_on:
              db: {{condition: service_healthy}}
        """,
    )
    result = gitdock("apply", "-f", str(f), "-p", project_name, "--wait-timeout", "2")
    assert result.returncode == 1
    assert "service db did not become healthy within 2s" in result.stderr
    assert "dependent operation(s) skipped" in result.stderr
    assert set(ids(project_name)) == {f"{project_name}-db-1"}


def test_host_and_none_network_modes(tmp_path: Path, project_name: str) -> None:
    f = write_compose(
        tmp_path,
        f"""
        services:
          onhost:
            image: {TEST_IMAGE}
            network_mode: host
            command: ["sh", "-c", "{LOOP}"]
          sealed:
            image: {TEST_IMAGE}
            network_mode: none
            command: ["sh", "-c", "{LOOP}"]
        """,
    )
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    assert inspect(f"{project_name}-onhost-1")["HostConfig"]["NetworkMode"] == "host"
    assert inspect(f"{project_name}-sealed-1")["HostConfig"]["NetworkMode"] == "none"
    links = docker_cli("exec", f"{project_name}-sealed-1", "ls", "/sys/class/net").split()
    assert links == ["lo"]
    assert docker_cli("network", "ls", "-q", "--filter", f"label=io.gitdock.project={project_name}") == ""
    assert ok(gitdock("plan", "-f", str(f), "-p", project_name)).startswith(
        f"project {project_name} is up to date"
    )


def test_bind_mount_shows_host_files(tmp_path: Path, project_name: str) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("from the host\n")
    f = write_compose(
        tmp_path,
        f"""
        services:
          web:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
            volumes:
              - ./site:/www:ro
        """,
    )
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    assert docker_cli("exec", f"{project_name}-web-1", "cat", "/www/index.html") == "from the host\n"
    denied = subprocess.run(
        ["docker", "exec", f"{project_name}-web-1", "touch", "/www/x"], capture_output=True, text=True
    )
    assert denied.returncode != 0  # mounted read-only


def test_published_ports_and_dns_between_services(tmp_path: Path, project_name: str) -> None:
    f = write_compose(
        tmp_path,
        f"""
        services:
          web:
            image: {TEST_IMAGE}
            command:
              - sh
              - -c
              - trap 'exit 0' TERM; mkdir /w; echo pong > /w/index.html; httpd -f -p 80 -h /w & wait
            ports:
              - "127.0.0.1::80"
          client:
            image: {TEST_IMAGE}
            command: ["sh", "-c", "{LOOP}"]
        """,
    )
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    port = inspect(f"{project_name}-web-1")["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"]
    assert port
    out = ""
    deadline = time.monotonic() + 60  # until httpd in web is up (a loaded machine is slow to start it)
    while time.monotonic() < deadline:
        try:
            out = docker_cli("exec", f"{project_name}-client-1", "wget", "-qO-", "http://web/")
            break
        except Exception:
            time.sleep(0.1)
    assert out.strip() == "pong"


def test_down_keeps_named_volumes_unless_asked(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, two_services())
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    down = gitdock("down", "-p", project_name)
    ok(down)
    assert (
        f"warning: volume:data: kept ({project_name}_data); use --volumes to remove named volumes"
        in down.stderr
    )
    assert ids(project_name) == {}
    assert docker_cli("network", "ls", "-q", "--filter", f"label=io.gitdock.project={project_name}") == ""
    assert (
        docker_cli("volume", "ls", "-q", "--filter", f"name={project_name}_data").strip()
        == f"{project_name}_data"
    )
    assert "nothing to remove" in ok(gitdock("down", "-p", project_name))
    ok(gitdock("down", "-p", project_name, "--volumes"))
    assert docker_cli("volume", "ls", "-q", "--filter", f"name={project_name}_data").strip() == ""


def test_ps_and_logs(tmp_path: Path, project_name: str) -> None:
    f = write_compose(
        tmp_path,
        f"""
        services:
          talker:
            image: {TEST_IMAGE}
            command:
              - sh
              - -c
              - trap 'exit 0' TERM; echo hello-out; echo hello-err >&2; while :; do sleep 1; done
            deploy:
              replicas: 2
        """,
    )
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    rows = json.loads(ok(gitdock("ps", "-p", project_name, "--output", "json")))
    assert [(r["service"], r["number"], r["state"]) for r in rows] == [
        ("talker", 1, "running"),
        ("talker", 2, "running"),
    ]
    table = ok(gitdock("ps", "-p", project_name))
    assert table.splitlines()[0].split() == ["NAME", "SERVICE", "STATE", "HEALTH", "STATUS", "PORTS"]
    wanted = (f"{project_name}-talker-1 | hello-out", f"{project_name}-talker-2 | hello-err")
    logs = ""
    deadline = time.monotonic() + 60  # until both replicas have printed: they start asynchronously
    while time.monotonic() < deadline:
        logs = ok(gitdock("logs", "-p", project_name, "talker"))
        if all(line in logs for line in wanted):
            break
        time.sleep(0.2)
    assert f"{project_name}-talker-1 | hello-out" in logs
    assert f"{project_name}-talker-2 | hello-err" in logs


def test_bad_spec_exits_1_with_file_and_line_and_changes_nothing(tmp_path: Path, project_name: str) -> None:
    f = write_compose(tmp_path, two_services())
    ok(gitdock("apply", "-f", str(f), "-p", project_name))
    before = ids(project_name)
    f.write_text(f.read_text().replace("environment:", "enviroment:"))
    result = gitdock("apply", "-f", str(f), "-p", project_name)
    assert result.returncode == 1
    assert f"{f}:" in result.stderr
    assert "did you mean `environment`" in result.stderr
    assert ids(project_name) == before


def test_docker_unreachable_is_one_line_naming_the_socket(tmp_path: Path) -> None:
    f = write_compose(tmp_path, two_services())
    sock = tmp_path / "nothing.sock"
    result = gitdock("apply", "-f", str(f), "-p", "unreachable", env={"DOCKER_HOST": f"unix://{sock}"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"error: cannot reach Docker at unix://{sock}")
