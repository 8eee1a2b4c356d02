"""Benchmark the agent's HTTP server as a real process: bursts, half-sent requests, replays.

Run: .venv/bin/python tests/bench/bench_agent_http.py [--deliveries 200] [--half-open 300]

1. `--deliveries` signed GitHub deliveries at once, one connection each: how many are
   answered, by status (target: all 202), and the slowest answer.
2. `--half-open` connections that send part of a request and stop: the agent's thread count
   before, while they are open and after (target: no growth), and how long until the agent
   has answered every one 408 (read_timeout 2 s).
3. 20 identical deliveries (one delivery ID): how many trigger (target: 1).
4. keep-alive GET /healthz on one connection: requests per second.

The agent has no sources, so nothing touches Docker. Not a pytest module.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.agent import AgentProcess  # noqa: E402  (tests/ goes on sys.path first)
from support.gitserver import free_port  # noqa: E402

SECRET = b"bench-secret"
BODY = json.dumps(
    {"ref": "refs/heads/main", "after": "a" * 40, "repository": {"clone_url": "https://example.com/app.git"}}
).encode()


def headers(delivery: str) -> dict[str, str]:
    return {
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET, BODY, hashlib.sha256).hexdigest(),
    }


def threads(agent: AgentProcess) -> int:
    assert agent.proc is not None
    status = Path(f"/proc/{agent.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Threads:")).split()[1])


def burst(agent: AgentProcess, n: int) -> None:
    start = threading.Barrier(n)
    answers: list[object] = []
    slowest = [0.0]

    def deliver() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=120)
        try:
            start.wait()
            began = time.monotonic()
            conn.request("POST", "/hooks/github", BODY, headers(str(uuid.uuid4())))
            answers.append(conn.getresponse().status)
            slowest[0] = max(slowest[0], time.monotonic() - began)
        except OSError as exc:
            answers.append(type(exc).__name__)
        finally:
            conn.close()

    senders = [threading.Thread(target=deliver) for _ in range(n)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    print(f"{n} concurrent deliveries: {dict(Counter(answers))}, slowest answer {slowest[0] * 1000:.0f} ms")


def half_open(agent: AgentProcess, n: int) -> None:
    before = threads(agent)
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", agent.port), timeout=60)
        sock.sendall(b"POST /hooks/github HTTP/1.1\r\nContent-Length: 10\r\n")
        socks.append(sock)
    during = threads(agent)
    started = time.monotonic()
    firsts: Counter[bytes] = Counter()
    for sock in socks:
        with sock:
            firsts[sock.recv(100).split(b"\r\n")[0]] += 1
    took = time.monotonic() - started
    print(
        f"{n} half-sent requests: threads {before} before, {during} while open, {threads(agent)} after; "
        f"answers {dict(firsts)} within {took:.1f} s"
    )


def replays(agent: AgentProcess) -> None:
    codes = [agent.request("POST", "/hooks/github", BODY, headers("bench-replay"))[0] for _ in range(20)]
    print(f"20 identical deliveries: {dict(Counter(codes))} (202 triggered, 200 acknowledged as a replay)")


def keep_alive(agent: AgentProcess, n: int = 2000) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    started = time.monotonic()
    for _ in range(n):
        conn.request("GET", "/healthz")
        conn.getresponse().read()
    conn.close()
    print(f"keep-alive GET /healthz: {n / (time.monotonic() - started):.0f} requests/s")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=200)
    parser.add_argument("--half-open", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gitdock-bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        (tmp / "hook.secret").write_text(SECRET.decode())
        config = tmp / "agent.yaml"
        config.write_text(
            f"state_dir: {tmp / 'state'}\nlisten: 127.0.0.1:{port}\n"
            "api: {read_timeout: 2s}\n"
            f"webhooks:\n  github: {{secret: {{file: {tmp / 'hook.secret'}}}}}\nsources: []\n"
        )
        with AgentProcess(config, port) as agent:
            burst(agent, args.deliveries)
            half_open(agent, args.half_open)
            replays(agent)
            keep_alive(agent)
            print("tracebacks in the agent's log:", agent.log().count("Traceback"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
