"""Run the gitdock agent as a real process for tests: `python -m gitdock.agent.cli.main agent`.

`AgentProcess` writes nothing itself: the caller hands it a config file. It starts the agent
with stdout/stderr in a log file, waits for /healthz, offers small HTTP helpers, and always
kills the process on exit (SIGKILL if SIGTERM is not enough), so a failing test never
leaves an agent behind. `log()` returns what the agent printed, for assertion messages.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")


class AgentProcess:
    """One agent subprocess on a loopback port."""

    def __init__(
        self, config: Path, port: int, *, env: Mapping[str, str] | None = None, token: str | None = None
    ) -> None:
        self.config = config
        self.token = token  # sent as a bearer token with every request (the API needs it for reads too)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # The config names the state dir; the suite's GITDOCK_STATE_DIR (for CLI applies) must
        # not override it, or agents of different tests would share one state.
        self.env = {k: v for k, v in os.environ.items() if k != "GITDOCK_STATE_DIR"} | dict(env or {})
        self.log_path = config.with_suffix(f".{port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle --

    def start(self, timeout: float = 60.0) -> AgentProcess:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("this agent is already running; a second start would orphan it")
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gitdock.agent.cli.main", "agent", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.get("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"agent not healthy after {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float = 15.0) -> float:
        """SIGTERM and wait; returns seconds until exit. Kills and raises if it does not exit."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"agent ignored SIGTERM for {timeout}s:\n{self.log()}") from None
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL (no cleanup in the agent at all)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> AgentProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(RuntimeError):  # kill() below
                self.terminate(10)
        self.kill()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- HTTP --

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, Any]:
        """(status, JSON body or text). HTTP errors are returned, not raised."""
        url = self.url + path  # always http://127.0.0.1:PORT/...
        sent = ({"Authorization": f"Bearer {self.token}"} if self.token else {}) | dict(headers or {})
        req = urllib.request.Request(url, data=body, method=method, headers=sent)  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - as above
                status, data = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, data = exc.code, exc.read()
        try:
            return status, json.loads(data)
        except ValueError:
            return status, data.decode(errors="replace")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path, timeout=30)  # an agent on a loaded CI machine can be slow to answer

    def post(
        self, path: str, headers: Mapping[str, str] | None = None, timeout: float = 120.0
    ) -> tuple[int, Any]:
        return self.request("POST", path, b"", headers, timeout)

    def status(self, name: str) -> dict[str, Any]:
        code, body = self.get(f"/api/v1/sources/{name}")
        assert code == 200, body
        assert isinstance(body, dict)
        return body

    def history(self, name: str) -> list[dict[str, Any]]:
        code, body = self.get(f"/api/v1/sources/{name}/history?limit=100")
        assert code == 200, body
        return list(body["history"])

    def wait_for(
        self, what: str, check: Callable[[], T | None], timeout: float = 90.0, interval: float = 0.1
    ) -> T:
        """Poll `check` until it returns something truthy; fail with the agent's log.

        The default limit is generous on purpose: CI runs the suite serially on 2 loaded cores,
        and a wait that ends on its condition costs nothing when things are fast."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
            except (AssertionError, OSError, KeyError) as exc:
                last = exc
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.proc.returncode}) waiting for {what}:\n{self.log()}"
                )
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what} (last: {last!r}):\n{self.log()[-6000:]}"
        )

    def wait_polls(self, name: str, count: int, timeout: float = 60.0) -> None:
        """Wait until `name` has fetched `count` more times (its ``lastCheckedAt`` moved on).

        For "nothing happened in the next polls" checks: a fixed sleep on a loaded machine may
        see no poll at all, and the check then proves nothing.
        """
        seen = [self.status(name)["lastCheckedAt"]]

        def check() -> bool:
            at = self.status(name)["lastCheckedAt"]
            if at != seen[-1]:
                seen.append(at)
            return len(seen) > count

        self.wait_for(f"{count} more polls of {name}", check, timeout)

    def wait_applied(self, name: str, sha: str, timeout: float = 90.0) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            s = self.status(name)
            return s if s["revision"]["applied"] == sha and s["lastResult"] == "success" else None

        return self.wait_for(f"{name} to apply {sha[:12]}", check, timeout)


def github_push(secret: str, ref: str, after: str, clone_url: str) -> tuple[bytes, dict[str, str]]:
    """A GitHub push delivery (body, headers) signed with `secret` the way GitHub signs it."""
    body = json.dumps(
        {
            "ref": ref,
            "before": "0" * 40,
            "after": after,
            "repository": {"clone_url": clone_url, "html_url": clone_url},
        }
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": str(uuid.uuid4()),  # a new one per delivery, as GitHub sends
        "X-Hub-Signature-256": signature,
    }
