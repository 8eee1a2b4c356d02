"""The agent's heap on glibc (agent/memory.py): arenas capped, free memory handed back.

Each check runs in a fresh interpreter, so the cap applies before any thread starts and the
suite's own heap does not blur the figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gitdock.agent.config import parse_config
from gitdock.agent.daemon import Agent
from gitdock.agent.results import Reason, ReconcileResult
from gitdock.agent.state import Result, Trigger

ARENAS = """
import ctypes, json, sys, tempfile, threading
from gitdock.agent.memory import limit_arenas
limited = limit_arenas() if sys.argv[1] == "limit" else False
alive = threading.Barrier(8)  # all eight at once: an exited thread's arena is reused
def work():
    blocks = [bytes(4096) for _ in range(64)]
    alive.wait()
    del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile() as out:
    f = libc.fopen(out.name.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    heaps = open(out.name).read().count("<heap nr=")
print(json.dumps({"limited": limited, "heaps": heaps}))
"""

TRIM = """
import json
from gitdock.agent.memory import give_back
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1])
blocks = [bytearray(65536) for _ in range(3000)]  # below the mmap threshold: on the heap
del blocks[::2]  # every other block: the heap cannot shrink from its top
before = rss()
give_back()
print(json.dumps({"before": before, "after": rss()}))
"""


def run(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, int]:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | (env or {})
    out = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True, env=environ
    )
    result: dict[str, int] = json.loads(out.stdout)
    return result


def test_the_cap_keeps_eight_threads_to_two_arenas() -> None:
    free = run(ARENAS, "free")
    capped = run(ARENAS, "limit")
    assert free["heaps"] > 2, free  # glibc's default: a new arena for each new thread
    assert capped == {"limited": True, "heaps": 2}


def test_malloc_arena_max_in_the_environment_wins() -> None:
    assert run(ARENAS, "limit", env={"MALLOC_ARENA_MAX": "4"})["limited"] is False


def test_give_back_returns_freed_heap_pages_to_the_kernel() -> None:
    figures = run(TRIM)
    # 1,500 freed 64 KiB blocks are 96 MiB; most of it leaves the process.
    assert figures["before"] - figures["after"] > 60 * 1024, figures


def test_the_agent_hands_memory_back_only_after_a_reconcile_that_did_work(tmp_path: Path) -> None:
    config = parse_config(
        f"state_dir: {tmp_path}\nsources:\n  - {{name: web, url: 'file:///srv/r.git'}}\n", "a.yaml", {}
    )
    agent = Agent(config)
    try:
        assert agent.tidy_memory() is False
        agent._count(ReconcileResult("web", Trigger.SCHEDULE, Result.SUCCESS, Reason.UP_TO_DATE.value))
        assert agent.tidy_memory() is False  # an up-to-date poll freed little
        agent._count(ReconcileResult("web", Trigger.SCHEDULE, Result.FAILURE, "SpecError"))
        assert agent.tidy_memory() is True
        assert agent.tidy_memory() is False  # nothing since
    finally:
        agent.store.close()
