"""Time docker-compose 1.29 and gitdock converging N services: cold, no-op, down.

Run: .venv/bin/python tests/bench/bench_converge.py [--sizes 50,100] [--tools compose,gitdock]

Each tool is timed as a whole command (wall clock, subprocess): the cold `up`/`apply`
on an empty project, then repeated no-op runs (median reported), then `down`. One
extra no-op run goes through a counting proxy on the Docker socket, so both tools'
Docker API calls are counted the same way, outside either tool. A run only counts
when all N containers are running afterwards. Writes a table to stdout and JSON to
.bench/converge.json. Not a pytest module: the name does not match test_*.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import secrets
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support.docker import (  # noqa: E402  (tests/ goes on sys.path first, as pytest does)
    COMPOSE_PROJECT_LABEL,
    GITDOCK_PROJECT_LABEL,
    TEST_IMAGE,
    docker_cli,
    docker_host,
    remove_project,
)

GITDOCK = ROOT / ".venv" / "bin" / "gitdock"
COMMAND_TIMEOUT = 900.0
_REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|DELETE|PATCH) (\S+) HTTP/1\.[01]\r?$")


def render_compose(services: int) -> str:
    """A Compose file with `services` idle busybox services on one network."""
    lines = ["services:"]
    for i in range(services):
        lines += [
            f"  svc{i:03d}:",
            f"    image: {TEST_IMAGE}",
            # No `init: true` in gitdock yet: the shell exits on TERM itself, so stops are fast.
            """    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]""",
            "    environment:",
            f"      BENCH_INDEX: '{i}'",
            "    networks: [bench]",
        ]
    lines += ["networks:", "  bench: {}", ""]
    return "\n".join(lines)


# --- counting proxy -------------------------------------------------------------


def _normalise_path(path: str) -> str:
    path = path.split("?", 1)[0]
    path = re.sub(r"^/v\d+\.\d+", "", path)
    path = re.sub(r"^/images/.+/(json|history|push|tag|get)$", r"/images/{}/\1", path)
    return re.sub(r"^/(containers|networks|volumes|exec)/(?!json$|create$|prune$)[^/]+", r"/\1/{}", path)


class CountingProxy:
    """A unix-socket proxy in front of dockerd that counts HTTP requests by method and path.

    It also tracks how many mutating requests other than stop and restart are in dockerd at
    once (``most_in_flight``): from a connection's first request line until dockerd closes it,
    which for gitdock's one-request HTTP/1.0 calls over a unix socket is the call's life.
    """

    def __init__(self, upstream: str) -> None:
        if not upstream.startswith("unix://"):
            raise ValueError(f"counting proxy needs a unix:// DOCKER_HOST, not {upstream}")
        self.upstream = upstream.removeprefix("unix://")
        self.path = os.path.join(tempfile.gettempdir(), f"gitdock-bench-{os.getpid()}.sock")
        self.requests: Counter[str] = Counter()
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._relay(self.request)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = Server(self.path, Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.upstream)

        seen = engine_work = False  # engine work: the connection's first request is counted in flight

        def pump_back() -> None:
            with contextlib.suppress(OSError):
                while data := upstream.recv(65536):
                    client.sendall(data)
            # dockerd has answered: out of flight before the caller can see the end of it
            if engine_work:
                with self._lock:
                    self.in_flight -= 1
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump_back, daemon=True)
        back.start()
        pending = b""
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                # Request lines are counted wherever a line starts; JSON bodies never
                # contain a bare "GET /x HTTP/1.1" line.
                *lines, pending = (pending + data).split(b"\n")
                for line in lines:
                    if match := _REQUEST_LINE.match(line):
                        key = f"{match[1].decode()} {_normalise_path(match[2].decode())}"
                        with self._lock:
                            self.requests[key] += 1
                            if not seen and _is_engine_work(key):
                                engine_work = True  # pump_back reads it once dockerd has answered
                                self.in_flight += 1
                                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                        seen = True
                pending = pending[-4096:]
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)
        back.join(timeout=COMMAND_TIMEOUT)
        upstream.close()


def _is_engine_work(key: str) -> bool:
    """Whether ``METHOD /path`` is a call gitdock's per-engine cap counts (runtime.docker)."""
    method, _, path = key.partition(" ")
    return method in ("POST", "PUT", "DELETE", "PATCH") and not path.endswith(("/stop", "/restart"))


# --- the tools ------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    stdout: str


class Tool:
    name = ""
    label = ""

    def __init__(self, compose_file: Path, project: str) -> None:
        self.file = compose_file
        self.project = project

    def up_argv(self) -> list[str]:
        raise NotImplementedError

    def down_argv(self) -> list[str]:
        raise NotImplementedError

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> Run:
        start = time.perf_counter()
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            env={**os.environ, **(env or {})},
            check=False,
            # docker-compose 1.29 was seen to hang half-way through `up` with an inherited
            # stdin that is not a terminal; neither tool needs one.
            stdin=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
        return Run(seconds, proc.stdout)

    def running_containers(self) -> int:
        out = docker_cli(
            "ps", "--quiet", "--filter", f"label={self.label}={self.project}", "--filter", "status=running"
        )
        return len(out.split())


class Compose(Tool):
    name = "docker-compose"
    label = COMPOSE_PROJECT_LABEL

    def up_argv(self) -> list[str]:
        return ["docker-compose", "-p", self.project, "-f", str(self.file), "up", "-d"]

    def down_argv(self) -> list[str]:
        return ["docker-compose", "-p", self.project, "-f", str(self.file), "down", "--volumes", "-t", "5"]


class Gitdock(Tool):
    name = "gitdock"
    label = GITDOCK_PROJECT_LABEL
    command: Path = GITDOCK  # --gitdock replaces it

    def up_argv(self) -> list[str]:
        return [str(self.command), "apply", "-f", str(self.file), "-p", self.project]

    def down_argv(self) -> list[str]:
        return [str(self.command), "down", "-p", self.project, "--volumes"]


TOOLS: dict[str, type[Tool]] = {"compose": Compose, "gitdock": Gitdock}


@dataclass
class Result:
    tool: str
    services: int
    project: str
    cold_s: list[float] = field(default_factory=list)
    noop_s: list[float] = field(default_factory=list)
    noop_median_s: float | None = None
    down_s: float | None = None
    noop_api_calls: int | None = None
    noop_api_calls_by_endpoint: dict[str, int] = field(default_factory=dict)
    reported_summary: str | None = None
    reported_api_calls: int | None = None
    error: str | None = None


def measure(
    tool_cls: type[Tool],
    compose_file: Path,
    services: int,
    cold_runs: int,
    noop_runs: int,
    proxy: CountingProxy | None,
) -> Result:
    project = f"gdb-{tool_cls.__name__.lower()}-{services}-{secrets.token_hex(2)}"
    tool = tool_cls(compose_file, project)
    result = Result(tool=tool.name, services=services, project=project)
    try:
        for i in range(cold_runs):
            if i:
                tool.run(tool.down_argv())
                remove_project(project)
            result.cold_s.append(tool.run(tool.up_argv()).seconds)
            running = tool.running_containers()
            if running != services:
                raise RuntimeError(f"after cold run {running}/{services} containers are running")
        for _ in range(noop_runs):
            run = tool.run(tool.up_argv())
            result.noop_s.append(run.seconds)
            # What the tool says of itself, e.g. gitdock's "nothing to change (5 Docker API calls, ...)".
            lines = [line.strip() for line in run.stdout.splitlines() if line.strip()]
            result.reported_summary = lines[-1] if lines else None
            if calls := re.search(r"\b(\d+) Docker API calls?\b", run.stdout):
                result.reported_api_calls = int(calls[1])
        result.noop_median_s = statistics.median(result.noop_s) if result.noop_s else None
        if proxy is not None:
            proxy.reset()
            tool.run(tool.up_argv(), env={"DOCKER_HOST": proxy.url})
            result.noop_api_calls = sum(proxy.requests.values())
            result.noop_api_calls_by_endpoint = dict(proxy.requests.most_common())
        if tool.running_containers() != services:
            raise RuntimeError("no-op runs changed the number of running containers")
        result.down_s = tool.run(tool.down_argv()).seconds
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        result.error = str(exc)
    finally:
        # Independent of the tool under test: whatever it left, labelled or named.
        remove_project(project)
    return result


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_table(results: list[Result]) -> None:
    header = (
        f"{'services':>8}  {'tool':<15} {'cold s':>8} {'no-op s':>8} {'no-op API':>9} {'down s':>8}  note"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        cold = statistics.median(r.cold_s) if r.cold_s else None
        calls = "-" if r.noop_api_calls is None else str(r.noop_api_calls)
        summary = re.sub(r"^project \S+: ", "", r.reported_summary or "")
        note = f"ERROR: {r.error[:120]}" if r.error else summary
        print(
            f"{r.services:>8}  {r.tool:<15} {_fmt(cold):>8} {_fmt(r.noop_median_s):>8} {calls:>9} "
            f"{_fmt(r.down_s):>8}  {note}"
        )


def environment() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        try:
            return subprocess.run(
                argv, capture_output=True, text=True, timeout=30, check=False
            ).stdout.strip()
        except OSError as exc:
            return f"unavailable: {exc}"

    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "docker_server": version(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker_compose": version(["docker-compose", "version", "--short"]),
        "gitdock_commit": version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "python": platform.python_version(),
    }


@contextlib.contextmanager
def counting_proxy(enabled: bool) -> Iterator[CountingProxy | None]:
    if not enabled or not docker_host().startswith("unix://"):
        yield None
        return
    proxy = CountingProxy(docker_host())
    try:
        yield proxy
    finally:
        proxy.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="50,100", help="comma-separated service counts (50,100)")
    parser.add_argument("--tools", default="compose,gitdock", help="comma-separated: compose,gitdock")
    parser.add_argument("--cold-runs", type=int, default=1, help="cold runs per tool and size (1)")
    parser.add_argument("--noop-runs", type=int, default=3, help="no-op runs; the median is reported (3)")
    parser.add_argument("--no-count", action="store_true", help="skip the API-counting no-op run")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "converge.json")
    parser.add_argument(
        "--gitdock",
        type=Path,
        default=GITDOCK,
        help="the gitdock command to time (default .venv/bin/gitdock; a `pip install .` venv "
        "without the dev tools starts faster, because httpx then skips its own CLI's imports)",
    )
    args = parser.parse_args(argv)
    Gitdock.command = args.gitdock

    sizes = [int(s) for s in args.sizes.split(",") if s]
    tools = [TOOLS[t] for t in args.tools.split(",") if t]
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="gitdock-bench-") as tmp,
        counting_proxy(not args.no_count) as proxy,
    ):
        for services in sizes:
            compose_file = Path(tmp) / f"compose-{services}.yaml"
            compose_file.write_text(render_compose(services))
            for tool_cls in tools:
                print(f"bench: {tool_cls.name} with {services} services ...", file=sys.stderr, flush=True)
                results.append(
                    measure(tool_cls, compose_file, services, args.cold_runs, args.noop_runs, proxy)
                )

    print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment(), "results": [asdict(r) for r in results]}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
