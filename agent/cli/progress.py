"""Progress display for ``gitdock apply`` and ``gitdock down``.

On a terminal it redraws one line per operation in place (running, done, failed, skipped);
anywhere else it prints one plain line per finished operation, so logs stay readable.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # annotations only: an apply imports the executor once it has a plan
    from gitdock.runtime.execute import ExecEvent
    from gitdock.runtime.plan import Operation

_MARK = {"start": "…", "done": "✔", "failed": "✘", "skipped": "-"}
_WORD = {
    "start": "running",
    "done": "done",
    "failed": "failed",
    "skipped": "skipped",
}


class Progress:
    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._rows: dict[int, str] = {}
        self._drawn = 0
        self._started: dict[int, float] = {}

    def __call__(self, event: ExecEvent) -> None:
        op = event.op
        with self._lock:
            if event.phase == "start":
                self._started[op.id] = time.monotonic()
            detail = f" {event.seconds:.1f}s" if event.phase == "done" else ""
            if event.error and event.phase != "done":
                detail = f": {event.error}"
            line = f" {_MARK[event.phase]} {op.resource:<28} {op.kind.value:<18} {_WORD[event.phase]}{detail}"
            if self.tty:
                self._rows[op.id] = line
                self._redraw()
            elif event.phase != "start":
                self.stream.write(line + "\n")
                self.stream.flush()

    def output(self, op: Operation, text: str) -> None:
        """A line a build printed: the running row shows the latest; elsewhere each is printed."""
        with self._lock:
            if self.tty:
                self._rows[op.id] = f" {_MARK['start']} {op.resource:<28} {op.kind.value:<18} {text[:80]}"
                self._redraw()
            else:
                self.stream.write(f"   {op.resource} | {text}\n")
                self.stream.flush()

    def _redraw(self) -> None:
        if self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F")
        for _, line in sorted(self._rows.items()):
            self.stream.write("\x1b[2K" + line + "\n")
        self._drawn = len(self._rows)
        self.stream.flush()
