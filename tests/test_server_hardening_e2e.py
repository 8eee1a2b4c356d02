"""The agent's HTTP server under load and abuse, as a real process on a loopback port.

Bursts of valid deliveries, replays, half-sent requests, malformed requests, clients that go
away mid-request, and reads without the API token. Request counts are bounded (at most 300
connections at once); nothing is timed: a test waits for an outcome, never for a duration.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from support.agent import AgentProcess, github_push
from support.docker import TEST_IMAGE
from support.gitserver import Upstream, free_port

HOOK_SECRET = "webhook-secret-for-tests"
TOKEN = "api-token-for-tests"
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"


def compose(greeting: str) -> str:
    return (
        "services:\n"
        "  web:\n"
        f"    image: {TEST_IMAGE}\n"
        f'    command: ["sh", "-c", "{LOOP}"]\n'
        f"    environment: {{GREETING: {greeting!r}}}\n"
    )


def write_config(
    tmp_path: Path, *, url: str | None = None, project: str = "", extra: str = ""
) -> AgentProcess:
    """An agent with a GitHub hook and, given `url`, one source `app` polled hourly (webhooks only)."""
    port = free_port()
    (tmp_path / "hook.secret").write_text(HOOK_SECRET + "\n")
    source = (
        f"sources:\n  - {{name: app, url: {url}, ref: main, path: deploy, project: {project}}}\n"
        if url
        else "sources: []\n"
    )
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        f"listen: 127.0.0.1:{port}\n"
        "defaults: {interval: 1h, jitter: 0.1s, debounce: 0.1s, settle: 0.2s}\n"
        f"webhooks:\n  github: {{secret: {{file: {tmp_path / 'hook.secret'}}}}}\n{extra}{source}"
    )
    return AgentProcess(config, port)


def signed(body: bytes, delivery: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }


def threads(agent: AgentProcess) -> int:
    assert agent.proc is not None
    status = Path(f"/proc/{agent.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def raw(port: int, data: bytes, *, timeout: float = 30.0) -> bytes:
    """Send `data` on a fresh connection; everything the agent answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def webhook_reconciles(agent: AgentProcess) -> int:
    return agent.log().count("source app: webhook push")


# --- load ----------------------------------------------------------------------------------


@pytest.mark.docker
def test_two_hundred_concurrent_deliveries_are_all_answered_and_deploy_once(
    tmp_path: Path, project_name: str
) -> None:
    upstream = Upstream(tmp_path / "repos" / "app.git")
    first = upstream.commit({"deploy/compose.yaml": compose("1")})
    with write_config(tmp_path, url=upstream.url, project=project_name) as agent:
        agent.wait_applied("app", first)
        second = upstream.commit({"deploy/compose.yaml": compose("2")})
        body, _ = github_push(HOOK_SECRET, "refs/heads/main", second, upstream.url)
        start = threading.Barrier(200)
        answers: list[int | str] = []

        def deliver() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=120)
            try:
                start.wait()
                conn.request("POST", "/hooks/github", body, signed(body))
                answers.append(conn.getresponse().status)
            except OSError as exc:
                answers.append(type(exc).__name__)
            finally:
                conn.close()

        senders = [threading.Thread(target=deliver) for _ in range(200)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert Counter(answers) == {202: 200}
        agent.wait_applied("app", second)
        assert "Traceback" not in agent.log()


@pytest.mark.docker
def test_a_repeated_delivery_is_acknowledged_and_triggers_nothing_even_after_a_restart(
    tmp_path: Path, project_name: str
) -> None:
    upstream = Upstream(tmp_path / "repos" / "app.git")
    first = upstream.commit({"deploy/compose.yaml": compose("1")})
    agent = write_config(tmp_path, url=upstream.url, project=project_name)
    body, _ = github_push(HOOK_SECRET, "refs/heads/main", first, upstream.url)
    with agent:
        agent.wait_applied("app", first)
        code, answer = agent.request("POST", "/hooks/github", body, signed(body, "delivery-1"))
        assert (code, answer) == (202, {"triggered": ["app"]})
        agent.wait_for("the webhook reconcile", lambda: webhook_reconciles(agent) == 1)
        for _ in range(19):  # paced past the 0.1 s debounce window: each would be its own reconcile
            time.sleep(0.3)
            code, answer = agent.request("POST", "/hooks/github", body, signed(body, "delivery-1"))
            assert code == 200 and answer["triggered"] == [] and "received before" in answer["ignored"]
        # A new delivery still triggers; had a replay triggered, its reconcile would be logged first.
        assert agent.request("POST", "/hooks/github", body, signed(body, "delivery-2"))[0] == 202
        agent.wait_for("the second webhook reconcile", lambda: webhook_reconciles(agent) >= 2)
        assert webhook_reconciles(agent) == 2
    with agent:  # the replay log survives the restart
        code, answer = agent.request("POST", "/hooks/github", body, signed(body, "delivery-1"))
        assert code == 200 and answer["triggered"] == []


def test_three_hundred_half_sent_requests_hold_no_threads_and_are_closed_by_the_read_timeout(
    tmp_path: Path,
) -> None:
    with write_config(tmp_path, extra="api: {read_timeout: 1s, idle_timeout: 1s}\n") as agent:
        before = threads(agent)
        half_sent = []
        for i in range(300):
            sock = socket.create_connection(("127.0.0.1", agent.port), timeout=60)
            head = b"POST /hooks/github HTTP/1.1\r\nContent-Length: 10\r\n" if i % 2 else b"GET /api/v1/sour"
            sock.sendall(head)
            half_sent.append(sock)
        assert agent.get("/healthz")[0] == 200  # still serving, and every connection was accepted
        assert threads(agent) <= before + 4, "a half-sent request must not hold a thread"
        firsts: Counter[bytes] = Counter()
        for sock in half_sent:
            with sock:
                firsts[sock.recv(200).split(b"\r\n")[0]] += 1  # blocks until the agent gives up
        assert firsts == {b"HTTP/1.1 408 Request Timeout": 300}
        assert threads(agent) <= before + 4
        assert agent.get("/healthz")[0] == 200


# --- bad requests ---------------------------------------------------------------------------


def test_malformed_requests_are_refused_with_4xx_not_500(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'nowhere.git'}"  # the source never fetches: nothing reaches Docker
    with write_config(tmp_path, url=url, project="never-deployed") as agent:
        nested = b'{"ref": "refs/heads/main", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        code, answer = agent.request("POST", "/hooks/github", nested, signed(nested))
        assert code == 400 and "JSON nested too deeply" in answer["error"]
        for query, want in [
            ("limit=1e20", "?limit= must be a whole number from 1 to 1000"),
            ("limit=100000000000000000000", "?limit= must be a whole number from 1 to 1000"),
            ("limit=0", "?limit= must be a whole number from 1 to 1000"),
            ("limit=-5", "?limit= must be a whole number from 1 to 1000"),
        ]:
            assert agent.get(f"/api/v1/sources/app/history?{query}") == (400, {"error": want})
        assert agent.get("/api/v1/sources/app/history?limit=3")[0] == 200
        assert agent.get("/api/v1/sources/app/drift?deep=maybe")[0] == 400
        assert agent.post("/api/v1/sources/app/reconcile?wait=1&timeout=1e9")[0] == 400

        for path in ("/hooks/github", "/api/v1/sources/app/reconcile"):
            answer = raw(agent.port, f"POST {path} HTTP/1.1\r\nContent-Length: abc\r\n\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 400 ") and b"Content-Length is not a number" in answer
        too_long = raw(agent.port, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
        assert too_long.startswith(b"HTTP/1.1 414 ")
        many = raw(agent.port, b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n")
        assert many.startswith(b"HTTP/1.1 431 ") and b'"error"' in many
        huge = raw(agent.port, b"GET /healthz HTTP/1.1\r\nX-A: " + b"b" * 70000 + b"\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 431 ")
        assert "Traceback" not in agent.log()
        assert agent.get("/healthz")[0] == 200


def test_clients_that_go_away_leave_no_traceback(tmp_path: Path) -> None:
    with write_config(tmp_path) as agent:
        big = json.dumps({"ref": "refs/heads/main", "pad": "x" * 500_000}).encode()
        for i in range(60):
            sock = socket.create_connection(("127.0.0.1", agent.port), timeout=10)
            if i % 3 == 0:  # the whole request, then gone before the answer
                sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            elif i % 3 == 1:  # half the body, then gone
                headers = signed(big)
                head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                sock.sendall(
                    f"POST /hooks/github HTTP/1.1\r\n{head}Content-Length: {len(big)}\r\n\r\n".encode()
                )
                sock.sendall(big[: len(big) // 2])
            else:  # a request line only
                sock.sendall(b"GET /readyz HTTP/1.1\r\n")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
            sock.close()
        assert agent.get("/healthz")[0] == 200
        assert agent.get("/metrics")[0] == 200
        assert "Traceback" not in agent.log() and " ERROR " not in agent.log()


# --- the API token ----------------------------------------------------------------------------


def token_config(tmp_path: Path, api: str = "") -> AgentProcess:
    (tmp_path / "api.token").write_text(TOKEN + "\n")
    url = f"file://{tmp_path / 'nowhere.git'}"
    return write_config(
        tmp_path,
        url=url,
        project="never-deployed",
        extra=f"api_token: {{file: {tmp_path / 'api.token'}}}\n{api}",
    )


def statuses(agent: AgentProcess, headers: dict[str, str]) -> list[int]:
    paths = [
        "/api/v1/sources",
        "/api/v1/sources/app",
        "/api/v1/sources/app/history",
        "/api/v1/sources/app/drift",
    ]
    return [agent.request("GET", p, headers=headers)[0] for p in paths]


def test_every_api_read_needs_the_token_when_one_is_set(tmp_path: Path) -> None:
    with token_config(tmp_path) as agent:
        assert statuses(agent, {}) == [401] * 4
        assert statuses(agent, {"Authorization": "Bearer wrong"}) == [401] * 4
        assert statuses(agent, {"Authorization": f"Bearer {TOKEN}"}) == [200] * 4
        # Unknown sources are not told apart from known ones without the token.
        assert agent.get("/api/v1/sources/nope")[0] == 401
        assert agent.post("/api/v1/sources/app/suspend")[0] == 401
        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert agent.get(open_path)[0] in (200, 503)
        code, body = agent.get("/api/v1/sources")
        assert code == 401 and body == {"error": "API token missing or wrong"}
        assert TOKEN not in agent.log()


def test_public_reads_open_reads_but_not_control(tmp_path: Path) -> None:
    with token_config(tmp_path, "api: {public_reads: true}\n") as agent:
        assert statuses(agent, {}) == [200] * 4
        assert agent.post("/api/v1/sources/app/suspend")[0] == 401
        assert agent.post("/api/v1/sources/app/suspend", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        status: Any = agent.get("/api/v1/sources/app")[1]
        assert status["suspended"] is True and TOKEN not in json.dumps(status)
