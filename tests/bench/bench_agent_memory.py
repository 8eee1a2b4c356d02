"""Where the agent's memory and idle CPU go: the agent wired as `run_agent` wires it, in process.

Run: .venv/bin/python tests/bench/bench_agent_memory.py [--sources 10] [--services 20]
[--idle-seconds 30] [--tracemalloc 25] [--profile-polls 5] [--keep PREFIX]

Starts telemetry, the HTTP server and the agent in this process (no signal handlers), waits
until every source has applied, stays idle for ``--idle-seconds`` and then prints:
- VmRSS / VmHWM, the thread count and the modules loaded (the gitdock and third-party packages
  with how many modules each: a package the agent loads but never uses costs RSS too);
- with ``--tracemalloc N`` (frames kept per allocation; slows everything about 3 times): the largest
  live allocations by line and by package, after a ``gc.collect()``;
- the live objects by type and the RSS after ``malloc_trim`` (what glibc keeps free);
- with ``--profile-polls N``: cProfile of N scheduled polls of one unchanged source (s0),
  run on this thread one after another (the sources then poll hourly, so the scheduler
  runs none meanwhile), sorted by cumulative and own time, then the agent's own modules.

The figures of the agent as a real process come from ``bench_agent.py``; this script is for
finding what holds them. The projects are those of ``bench_agent.py`` (same names with
``--keep``, reused when running); everything else it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import gc
import io
import pstats
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from bench.bench_agent import (  # noqa: E402  (tests/ goes on sys.path first)
    compose,
    idle_projects,
    read_proc,
    remove_projects,
    write_config,
)

from support.gitserver import Upstream  # noqa: E402


def start_agent(config_path: Path) -> tuple[object, object]:
    """The agent and its HTTP server, started as ``run_agent`` does (minus signals)."""
    from gitdock.agent import telemetry as tm
    from gitdock.agent.config import load_config
    from gitdock.agent.daemon import Agent
    from gitdock.agent.server import AgentHTTPServer

    config = load_config(config_path)
    tm.setup_telemetry(config.telemetry)
    agent = Agent(config)
    server = AgentHTTPServer(agent)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, daemon=True).start()
    agent.start()
    return agent, server


def wait_applied(agent: object, sources: int, sha: str, timeout: float) -> float:
    started = time.monotonic()
    pending = {f"s{i}" for i in range(sources)}
    while pending:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not applied after {timeout:.0f} s: {sorted(pending)[:5]}")
        for name in list(pending):
            state = agent.store.source(name)  # type: ignore[attr-defined]
            if state.applied_sha == sha and state.result is not None and state.result.value == "success":
                pending.discard(name)
        time.sleep(0.2)
    return time.monotonic() - started


def print_modules() -> None:
    """The loaded modules by top-level package (gitdock by subpackage)."""
    counts: Counter[str] = Counter()
    for name in list(sys.modules):
        parts = name.split(".")
        counts[".".join(parts[:3]) if parts[0] == "gitdock" else parts[0]] += 1
    print(f"\nmodules loaded: {len(sys.modules)}")
    print("  " + ", ".join(f"{name} {n}" for name, n in counts.most_common(60)))


def watch_gc() -> list[float]:
    """[seconds in the collector, collections, full collections] from now on, kept up to date."""
    totals = [0.0, 0.0, 0.0]
    started = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        totals[0] += time.perf_counter() - started[0]
        totals[1] += 1
        totals[2] += info["generation"] == 2

    gc.callbacks.append(callback)
    return totals


def print_held() -> None:
    """The live objects by type, and RSS once glibc has given its free memory back."""
    gc.collect()
    print(f"live objects by type: {count_objects()}")
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print(f"after malloc_trim: VmRSS {read_proc_self()[1] / 1024:.1f} MB")


def count_objects(top: int = 12) -> str:
    """The most numerous live objects that the collector tracks, by type name."""
    counts = Counter(type(o).__name__ for o in gc.get_objects())
    return ", ".join(f"{name} {n}" for name, n in counts.most_common(top))


def print_tracemalloc(limit: int = 40) -> None:
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        ]
    )
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    print(f"\ntracemalloc: {total / 2**20:.1f} MiB live (Python allocations only)")
    by_package: Counter[str] = Counter()
    for stat in snapshot.statistics("filename"):
        by_package[package_of(stat.traceback[0].filename)] += stat.size
    print("by package:")
    for name, size in by_package.most_common(25):
        print(f"  {size / 2**20:7.2f} MiB  {name}")
    print("by line:")
    for stat in snapshot.statistics("lineno")[:limit]:
        frame = stat.traceback[0]
        print(f"  {stat.size / 2**10:9.1f} KiB {stat.count:7d}  {short(frame.filename)}:{frame.lineno}")
    print("by allocating stack (gitdock frames), largest:")
    for stat in snapshot.statistics("traceback")[:15]:
        frames = [f"{short(f.filename)}:{f.lineno}" for f in stat.traceback if "gitdock" in f.filename]
        where = " < ".join(reversed(frames[-4:])) or short(stat.traceback[0].filename)
        print(f"  {stat.size / 2**10:9.1f} KiB  {where}")


def package_of(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0]
    for part in ("/agent/", "/runtime/", "/specs/"):
        if part in filename and str(ROOT) in filename:
            return "gitdock" + part.rstrip("/") + ":" + filename.rsplit("/", 1)[1]
    if "/python3" in filename:
        return "stdlib:" + filename.rsplit("/", 1)[1]
    return filename


def short(filename: str) -> str:
    return filename.split("site-packages/", 1)[-1].replace(str(ROOT) + "/", "")


# The agent's own modules on a poll's path, listed apart from the runtime's.
AGENT_OWN = r"agent/(git|telemetry|metrics|state|results|applied_store|daemon|scheduler)\.py"


def profile_polls(agent: object, polls: int) -> None:
    from gitdock.agent.state import Trigger

    profile = cProfile.Profile()
    started = time.process_time()
    for _ in range(polls):
        profile.enable()
        result = agent._run("s0", Trigger.SCHEDULE)  # type: ignore[attr-defined]
        profile.disable()
        assert result.result.value == "success", result
    cpu = (time.process_time() - started) / polls
    print(f"\n{polls} polls of s0: {cpu * 1000:.1f} ms of CPU each (all threads), last: {result.reason}")
    listings = [("cumulative", ()), ("tottime", ()), ("cumulative", (AGENT_OWN,))]
    for key, restrict in listings:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(key).print_stats(*restrict, 30)
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[:12000])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--services", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES")
    parser.add_argument("--profile-polls", type=int, default=0)
    parser.add_argument("--keep", metavar="PREFIX", help="as bench_agent.py: reuse and leave the projects")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    projects = idle_projects(args.sources, args.keep)
    try:
        with tempfile.TemporaryDirectory(prefix="gitdock-bench-memory-") as tmp:
            run(Path(tmp), projects, args)
    finally:
        if not args.keep:
            remove_projects(projects)
    return 0


def run(tmp: Path, projects: list[str], args: argparse.Namespace) -> None:
    upstream = Upstream(tmp / "idle.git")
    # Kept projects were made by bench_agent.py with 50 sources, so on the default bridge.
    bridge = args.sources > 20 or args.keep is not None
    sha = upstream.commit({"compose.yaml": compose("idle", bridge=bridge, services=args.services)})
    # Profiled polls run on this thread: the scheduler must not poll the sources meanwhile.
    config, _ = write_config(tmp, upstream.url, projects, "1h" if args.profile_polls else "10s")
    agent, server = start_agent(config)
    try:
        took = wait_applied(agent, args.sources, sha, 120 + args.sources * args.services)
        print(f"{args.sources} sources of {args.services} services applied in {took:.1f} s")
        gc_time = watch_gc()
        cpu0 = time.process_time()
        time.sleep(args.idle_seconds)
        cpu = time.process_time() - cpu0
        print(
            f"idle {args.idle_seconds:g} s: {100 * cpu / args.idle_seconds:.1f} % of one core; "
            f"the garbage collector {gc_time[0]:.2f} s of it over {int(gc_time[1])} collections "
            f"({int(gc_time[2])} of generation 2)"
        )
        _, rss, hwm = read_proc_self()
        print(f"VmRSS {rss / 1024:.1f} MB, VmHWM {hwm / 1024:.1f} MB, threads {threading.active_count()}")
        print_modules()
        print_held()
        if args.tracemalloc:
            print_tracemalloc()
        if args.profile_polls:
            profile_polls(agent, args.profile_polls)
    finally:
        agent.stop(8.0)  # type: ignore[attr-defined]
        server.shutdown()  # type: ignore[attr-defined]
        server.server_close()  # type: ignore[attr-defined]


def read_proc_self() -> tuple[float, int, int]:
    import os

    return read_proc(os.getpid())


if __name__ == "__main__":
    sys.exit(main())
