"""The ``gitdock`` command (``[project.scripts]``, ``python -m gitdock.agent.cli``).

It starts an apply's observe (``cli.early``) before it imports the command line (``cli.main``).

Two costs of the interpreter itself are taken out of every short command:

- The cyclic garbage collector: importing the command line and reading a cached load create a
  few hundred thousand objects, and with the default thresholds the collector walked them
  ~150 times in a no-op apply (40-160 ms of it at 1,000 containers, ~40 ms of a plan of 100
  services). Reference counting frees nearly all of a command's garbage; for every command
  but ``agent`` the collector runs after 100,000 allocations instead of 700 (still bounded:
  a long ``logs --follow`` is collected). The agent, long-lived, keeps Python's defaults.
- The teardown: a normal exit frees every object of the run one by one (~40 ms after a no-op
  apply of 1,000 containers). ``leave`` flushes stdout and stderr, runs the ``atexit``
  handlers (logging's, a trace exporter's flush) and ends the process, unless a thread that
  is not a daemon still runs or a flush fails: then the normal exit handles it.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import threading
from collections.abc import Sequence

from gitdock.agent.cli.early import look_early

__all__ = ["command_word", "leave", "main"]

SHORT_COMMAND_GC = (100_000, 50, 10)  # gen0 allocations, then gen1 and gen2 passes
_GLOBAL_VALUES = frozenset({"--host", "--context"})  # global options with a value


def main() -> int:
    words = sys.argv[1:]
    if command_word(words) != "agent":
        gc.set_threshold(*SHORT_COMMAND_GC)
    early = look_early(words)
    from gitdock.agent.cli.main import main as run

    return leave(run(early=early))


def command_word(words: Sequence[str]) -> str | None:
    """The subcommand in ``words`` (``agent`` in ``--host tcp://h:2375 agent --config c``)."""
    values = iter(words)
    for word in values:
        if word in _GLOBAL_VALUES:
            next(values, None)
        elif not word.startswith("-"):
            return word
    return None


def leave(code: int) -> int:
    """End the process with ``code`` now, without the interpreter's teardown; returns ``code``
    (for the normal exit) when a non-daemon thread still runs or stdout/stderr cannot be
    flushed (a closed pipe: the normal exit reports it as it always did)."""
    current = threading.current_thread()
    if any(t is not current and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return code
    if not _flushed():
        return code
    atexit._run_exitfuncs()
    if not _flushed():  # a handler printed, and that print cannot be delivered
        return code
    os._exit(code)


def _flushed() -> bool:
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return False
    return True
