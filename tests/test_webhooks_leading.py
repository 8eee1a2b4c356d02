"""The webhook debouncer's leading edge: a lone push reconciles at once, a burst after it once more."""

from __future__ import annotations

import threading
import time

from gitdock.agent.webhooks import Debouncer


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.first = threading.Event()
        self.second = threading.Event()

    def __call__(self, key: str, value: int) -> None:
        with self.lock:
            self.calls.append((key, value))
            (self.second if self.first.is_set() else self.first).set()


def test_leading_debouncer_fires_a_lone_trigger_without_waiting_its_window() -> None:
    rec = Recorder()
    deb: Debouncer[str, int] = Debouncer(600.0, rec, leading=True)  # a trailing call would take 10 min
    deb.trigger("src", 1)
    assert rec.first.wait(30)
    assert rec.calls == [("src", 1)]
    assert deb.pending() == set()
    deb.close()


def test_leading_debouncer_coalesces_the_burst_after_a_leading_call_into_one_more() -> None:
    rec = Recorder()
    # A window long enough that a preempted loop still lands the whole burst inside it.
    deb: Debouncer[str, int] = Debouncer(2.0, rec, leading=True)
    deb.trigger("src", 0)
    assert rec.first.wait(30)
    for i in range(1, 20):
        deb.trigger("src", i)
    assert rec.second.wait(30)
    time.sleep(2.5)  # nothing else may fire after the window
    assert rec.calls == [("src", 0), ("src", 19)]
    deb.close()


def test_leading_debouncer_keys_fire_independently() -> None:
    rec = Recorder()
    deb: Debouncer[str, int] = Debouncer(600.0, rec, leading=True)
    deb.trigger("a", 1)
    deb.trigger("b", 2)
    deadline = time.monotonic() + 30
    while len(rec.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(rec.calls) == [("a", 1), ("b", 2)]
    deb.close()
