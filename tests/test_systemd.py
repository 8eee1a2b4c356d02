"""The systemd unit (examples/systemd/gitdock.service) and the notify protocol (agent/sdnotify.py).

The unit is checked by the real `systemd-analyze verify` (with ExecStart pointing at this
environment's gitdock, which it requires to exist). The notify protocol is tested against a
real AF_UNIX datagram socket, both directly and from a real agent process, which must send
READY=1 once it serves, WATCHDOG=1 while it runs, and STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitdock.agent.sdnotify import Notifier, socket_address, watchdog_interval
from support.agent import AgentProcess
from support.docker import is_docker_required
from support.gitserver import free_port

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "examples" / "systemd" / "gitdock.service"
INSTALLED_GITDOCK = "/opt/gitdock/bin/gitdock"


def unit_settings() -> dict[str, list[str]]:
    """Key -> every value it is given (systemd keys may repeat), over all sections."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        reason = "systemd-analyze is not installed (Debian package systemd; tests/env/setup.sh installs it)"
        if is_docker_required():
            pytest.fail(f"{reason}; CI or GITDOCK_REQUIRE_DOCKER=1 is set, so this fails instead of skipping")
        pytest.skip(reason)
    return found


def verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on the unit, with ExecStart= on this environment's gitdock."""
    unit = tmp_path / "gitdock.service"
    unit.write_text(unit_text.replace(INSTALLED_GITDOCK, str(Path(sys.executable).parent / "gitdock")))
    return subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )


# --- the unit --------------------------------------------------------------------------------------


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    done = verify(UNIT.read_text(), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "gitdock.service" not in done.stderr, done.stderr


def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("Type=notify", "Type=notfy")
    assert broken != UNIT.read_text()
    done = verify(broken, tmp_path)
    # A bad value is a warning naming the file and line (exit 0), so the good unit's test
    # fails on any line about the unit, not only on the exit status.
    assert "gitdock.service:" in done.stderr
    assert "Failed to parse service type" in done.stderr


def test_unit_is_a_hardened_notify_service_with_credentials() -> None:
    s = unit_settings()
    expected = {
        "Type": ["notify"],
        "ProtectSystem": ["strict"],
        "ProtectHome": ["yes"],
        "NoNewPrivileges": ["yes"],
        "StateDirectory": ["gitdock"],
        "ReadWritePaths": ["/var/lib/gitdock"],
        "SupplementaryGroups": ["docker"],
        "User": ["gitdock"],
        "CapabilityBoundingSet": [""],
    }
    assert {k: s.get(k) for k in expected} == expected
    assert s["LoadCredential"] == ["api-token:/etc/gitdock/credentials/api-token"]
    assert "GITDOCK_API_TOKEN_FILE=%d/api-token" in s["Environment"]
    assert int(s["WatchdogSec"][0]) > 0
    assert s["ExecStartPre"] == [f"{INSTALLED_GITDOCK} agent --check-config --config /etc/gitdock/agent.yaml"]


# --- the protocol ----------------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound AF_UNIX datagram socket, as systemd gives a Type=notify service."""
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(10)
        yield sock, path


def received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def test_notifier_sends_ready_stopping_and_watchdog_datagrams(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    now = [100.0]
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, clock=lambda: now[0])
    assert notifier.interval == 1.0
    assert notifier.ready("serving")
    assert received(sock) == "READY=1\nSTATUS=serving"
    assert not notifier.tick()  # the interval has not passed since READY
    now[0] += 1.0
    assert notifier.tick()
    assert received(sock) == "WATCHDOG=1"
    assert notifier.stopping()
    assert received(sock) == "STOPPING=1"


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"gitdock-test-{free_port()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(10)
        assert Notifier({"NOTIFY_SOCKET": f"@{name}"}).ready()
        assert received(sock) == "READY=1"


def test_notifier_is_a_no_op_outside_systemd_and_when_the_socket_is_gone(tmp_path: Path) -> None:
    assert not Notifier({}).is_enabled
    assert not Notifier({}).ready()
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")}).ready()
    assert socket_address("relative/path") is None


def test_watchdog_is_only_for_the_process_it_names() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None
    assert watchdog_interval({}, 42) is None


def test_agent_notifies_ready_pings_the_watchdog_and_notifies_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, path = notify_socket
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nlisten: 127.0.0.1:{port}\nsources: []\n")
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"}
    with AgentProcess(config, port, env=env) as agent:
        ready = received(sock)
        assert ready.startswith("READY=1\nSTATUS=serving on "), ready
        assert agent.get("/healthz")[0] == 200  # READY=1 came once the API answered
        assert [received(sock), received(sock)] == ["WATCHDOG=1", "WATCHDOG=1"]
        agent.terminate()
        messages = []
        while (message := received(sock)) != "STOPPING=1":
            messages.append(message)
        assert set(messages) <= {"WATCHDOG=1"}
