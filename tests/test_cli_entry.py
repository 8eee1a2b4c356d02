"""The ``gitdock`` entry point's own work: which command it is, the collector's thresholds, and
an exit without the interpreter's teardown that still delivers everything a normal exit does."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from gitdock.agent.cli.entry import command_word, leave


@pytest.mark.parametrize(
    ("words", "command"),
    [
        (["apply", "-f", "agent"], "apply"),
        (["--host", "tcp://h:2375", "agent", "--config", "c.yaml"], "agent"),
        (["--context", "agent", "ps"], "ps"),
        (["--host=unix:///s", "-v", "agent"], "agent"),
        (["-v", "--version"], None),
        ([], None),
        (["--host"], None),
    ],
)
def test_command_word_skips_global_options_and_their_values(words: list[str], command: str | None) -> None:
    assert command_word(words) == command


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_leave_exits_with_the_code_after_the_output_and_the_atexit_handlers() -> None:
    result = run_python(
        "import atexit, sys\n"
        "from gitdock.agent.cli.entry import leave\n"
        "atexit.register(lambda: print('handler ran', flush=False))\n"
        "print('x' * 100_000, end='')\n"  # more than one buffer, unflushed
        "sys.stderr.write('err line')\n"
        "leave(3)\n"
        "print('not reached')\n"
    )
    assert result.returncode == 3
    assert result.stdout == "x" * 100_000 + "handler ran\n"
    assert result.stderr == "err line"


def test_leave_returns_while_a_non_daemon_thread_runs() -> None:
    release = threading.Event()
    worker = threading.Thread(target=release.wait, daemon=False)
    worker.start()
    try:
        assert leave(5) == 5  # the normal exit waits for the worker
    finally:
        release.set()
        worker.join()


def test_leave_does_not_wait_for_daemon_threads() -> None:
    result = run_python(
        "import threading, time\n"
        "from gitdock.agent.cli.entry import leave\n"
        "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
        "leave(0)\n"
    )
    assert result.returncode == 0


def test_a_closed_stdout_is_left_to_the_normal_exit() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # whatever the command prints cannot be delivered
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys\nfrom gitdock.agent.cli.entry import leave\nsys.stdout.write('lost')\nleave(0)\n",
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # stdout buffered
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 120, result.stderr  # CPython's status when stdout cannot be flushed
    assert "BrokenPipeError" in result.stderr


@pytest.mark.parametrize(("command", "threshold"), [("plan", 100_000), ("agent", 700)])
def test_short_commands_run_the_collector_less_often(command: str, threshold: int) -> None:
    result = run_python(
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('threshold', gc.get_threshold()[0]))\n"
        f"sys.argv = ['gitdock', {command!r}, '--help']\n"
        "from gitdock.agent.cli.entry import main\n"
        "sys.exit(main())\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"threshold {threshold}"
