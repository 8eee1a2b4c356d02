"""Watching the live host for drift: the Docker events watcher and the drift check.

``EventWatcher`` follows ``GET /events`` in two background threads: container events are
filtered by the ``io.gitdock.project`` label on the server; network and volume events carry no
labels, so they are filtered here by name (``<project>_`` prefix, or names the caller knows).
When the stream breaks (dockerd restarted, socket gone) it backs off while dockerd is down,
then resumes with ``since=<last event time>``, so nothing in dockerd's event buffer is missed.
Events gitdock causes itself are muted with ``pause(project)`` / ``resume(project)`` around
an apply: events stamped inside that window are dropped even when they arrive after it.

``check_drift`` is the impure half of drift detection: observe (the four list calls a no-op
reconcile makes), inspect only the containers that need it, then the pure
``gitdock.runtime.drift.detect.detect_drift``.

Each stream uses its own DockerClient on the same host, so its long-lived stream never counts
against, or blocks, the reconciles' client.

``quiet_token`` is what lets a poll reuse its last look at the host (an informer's cache): a
number that stays the same while both streams are connected and no event that concerns the
watched projects has arrived on them: their containers', their networks' and volumes', and any
image's (tag, pull, delete: a moved local tag can change a plan).
A caller keeps the token it read before observing; while the watcher still returns it, nothing
the streams can report has happened since, so that snapshot is still the host.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from gitdock.runtime.docker import DockerClient, DockerError, DockerUnavailable, NotFound
from gitdock.runtime.drift.detect import (
    CONTAINER_ACTIONS,
    DockerEvent,
    DriftReport,
    containers_to_inspect,
    detect_drift,
    is_relevant_event,
)
from gitdock.runtime.labels import LABEL_PROJECT
from gitdock.runtime.observe import ObservedState, observe
from gitdock.runtime.record import AppliedRecord

__all__ = ["CONTAINER_ACTIONS", "EventWatcher", "check_drift", "docker_time", "fetch_events"]

log = logging.getLogger("gitdock.runtime.drift.watch")

_OBJECT_ACTIONS = ("create", "destroy", "connect", "disconnect")
# Image events do not mean drift, but they end a quiet period (a moved tag can change a plan).
_IMAGE_ACTIONS = ("tag", "untag", "delete", "pull", "import", "load")
_STREAMS = ("containers", "objects")
_MUTE_KEEP_NS = 60_000_000_000  # a closed mute window is kept this long for late events


def docker_time(ts_ns: int) -> str:
    """Unix nanoseconds as the ``since``/``until`` string dockerd takes (``seconds.nanos``)."""
    return f"{ts_ns // 1_000_000_000}.{ts_ns % 1_000_000_000:09d}"


def _is_listening(host: str) -> bool:
    """Whether a unix socket accepts connections (always True for tcp hosts).

    A liveness probe only, never an API call: httpcore 1.0 leaks the socket of a failed unix
    connect (ResourceWarning), and a watcher waiting for dockerd would fail many a time.
    """
    if not host.startswith("unix://"):
        return True
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(host[len("unix://") :])
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _label_filter(projects: Collection[str] | None) -> list[str]:
    if projects is None:
        return [LABEL_PROJECT]
    return [f"{LABEL_PROJECT}={p}" for p in sorted(projects)]


class EventWatcher:
    """Follow dockerd's events for gitdock projects and hand relevant ones to ``on_event``.

    ``project_filter``: one project, several, or None for every gitdock project. For network
    and volume events, ``resource_names`` (called on each event) maps extra Docker names to
    their project (networks and volumes named with ``name:``); names starting with
    ``<project>_`` always match. ``since`` (unix seconds) replays from that time; by default
    the watcher starts at ``start()``. ``on_reconnect(since)`` is called when the stream comes
    back after dockerd was unreachable: a caller that wants to be level-based runs a full
    check then. Callbacks run on the watcher's threads; their exceptions are logged.
    """

    def __init__(
        self,
        docker: DockerClient,
        project_filter: str | Collection[str] | None,
        on_event: Callable[[DockerEvent], None],
        since: float | None = None,
        *,
        resource_names: Callable[[], Mapping[str, str]] | None = None,
        on_reconnect: Callable[[float], None] | None = None,
        idle_timeout: float = 1.0,
        max_backoff: float = 2.0,
    ) -> None:
        self.host = docker.host
        self._endpoint = docker.endpoint  # TLS files and ssh options too, not just the address
        self._timeout = docker.timeout
        self.projects: frozenset[str] | None = (
            None
            if project_filter is None
            else frozenset([project_filter] if isinstance(project_filter, str) else project_filter)
        )
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.resource_names = resource_names
        self.idle_timeout = idle_timeout
        self.max_backoff = max_backoff
        self._since_ns = None if since is None else int(since * 1e9)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._mutes: dict[str, list[list[int | None]]] = {}  # project -> [[start_ns, end_ns|None]]
        self._threads: list[threading.Thread] = []
        self.reconnects = 0
        self.last_event_ns = 0
        self.connected = threading.Event()
        self._generation = 0  # bumped on every event read and every stream lost (quiet_token)
        self._up: set[str] = set()  # the streams connected now

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> EventWatcher:
        since = self._since_ns if self._since_ns is not None else time.time_ns()
        streams: list[tuple[str, dict[str, list[str]]]] = [
            (
                "containers",
                {
                    "type": ["container"],
                    "label": _label_filter(self.projects),
                    "event": list(CONTAINER_ACTIONS),
                },
            ),
            (
                "objects",
                {"type": ["network", "volume", "image"], "event": [*_OBJECT_ACTIONS, *_IMAGE_ACTIONS]},
            ),
        ]
        for name, filters in streams:
            thread = threading.Thread(
                target=self._follow, args=(name, filters, since), name=f"gitdock-events-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following; returns once both threads ended (at most ``idle_timeout`` later)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def is_alive(self) -> bool:
        """Whether a stream thread still runs (False after ``stop``)."""
        return any(t.is_alive() for t in self._threads)

    def __enter__(self) -> EventWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def quiet_token(self) -> int | None:
        """The current quiet period's token, or None while a stream is not connected (then
        nothing can be reused). See the module's docstring."""
        with self._lock:
            if len(self._up) < len(_STREAMS) or self._stop.is_set():
                return None
            return self._generation

    def _mark(self, stream: str, up: bool, *, event: bool = False) -> None:
        """A stream is connected (``up``) or lost; ``event``: it has just read one."""
        with self._lock:
            if event or (not up and stream in self._up):
                self._generation += 1
            if up:
                self._up.add(stream)
            else:
                self._up.discard(stream)

    # -- muting gitdock's own changes -------------------------------------------------------

    def pause(self, project: str) -> None:
        """Mute the project's events from now until ``resume`` (an apply is in progress)."""
        with self._lock:
            self._mutes.setdefault(project, []).append([time.time_ns(), None])

    def resume(self, project: str) -> None:
        """End the mute window; events stamped inside it that arrive later are still dropped."""
        now = time.time_ns()
        with self._lock:
            windows = self._mutes.get(project, [])
            for window in windows:
                if window[1] is None:
                    window[1] = now
            windows[:] = [w for w in windows if w[1] is None or now - int(w[1]) < _MUTE_KEEP_NS]

    def is_muted(self, project: str, time_ns: int) -> bool:
        with self._lock:
            return any(
                int(start or 0) <= time_ns and (end is None or time_ns <= end)
                for start, end in self._mutes.get(project, [])
            )

    # -- the streams -----------------------------------------------------------------------

    def _project_of(self, event: DockerEvent) -> str | None:
        if event.type == "container":
            return event.project
        extra = self.resource_names() if self.resource_names is not None else {}
        if event.name in extra:
            return extra[event.name]
        for project in self.projects or ():
            if event.name.startswith(project + "_"):
                return project
        return None

    def _ends_quiet(self, event: DockerEvent) -> bool:
        """Whether the event can change what a look at the watched projects shows: any of
        their containers' events, any image event, their own networks' and volumes' (other
        projects' networks come and go on a shared host without touching these)."""
        if event.type in ("container", "image"):
            return True
        project = self._project_of(event)
        return project is not None and (self.projects is None or project in self.projects)

    def _deliver(self, event: DockerEvent) -> None:
        if not is_relevant_event(event):
            return
        project = self._project_of(event)
        if project is None or (self.projects is not None and project not in self.projects):
            return
        if self.is_muted(project, event.time_ns):
            return
        if event.type != "container":
            event = DockerEvent(
                event.type,
                event.action,
                event.id,
                event.name,
                event.time_ns,
                {**event.attributes, LABEL_PROJECT: project},
            )
        try:
            self.on_event(event)
        except Exception:  # a callback's bug must not end the watch
            log.exception("event callback failed for %s %s %s", event.type, event.action, event.name)

    def _follow(self, stream: str, filters: dict[str, list[str]], since_ns: int) -> None:
        clients = [DockerClient(self._endpoint, timeout=self._timeout)]
        try:
            self._follow_with(stream, clients, filters, since_ns)
        finally:
            self._mark(stream, False)
            clients[-1].close()

    def _follow_with(
        self, stream: str, clients: list[DockerClient], filters: dict[str, list[str]], since_ns: int
    ) -> None:
        """The stream loop; ``clients[-1]`` is the live client (replaced after a failure)."""
        cursor = _Cursor(since_ns, stream)
        down = False
        while not self._stop.is_set():
            if down and not self._await_dockerd(clients[-1], cursor):
                return
            down = self._read_stream(clients[-1], filters, cursor)
            if down:
                self._mark(stream, False)
                self.connected.clear()
                # Drop the dead connection: httpcore does not close a pooled one that broke.
                clients[-1].close()
                clients.append(DockerClient(self._endpoint, timeout=self._timeout))

    def _await_dockerd(self, client: DockerClient, cursor: _Cursor) -> bool:
        """Back off until dockerd answers again (then call ``on_reconnect``); False if stopped."""
        backoff = 0.05
        while not self._stop.is_set():
            try:
                if not _is_listening(self.host):
                    raise DockerUnavailable(f"nothing listens on {self.host}")
                client.ping()
            except DockerUnavailable:
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            self.reconnects += 1
            log.info(
                "dockerd at %s is back; resuming events since %s", self.host, docker_time(cursor.since_ns)
            )
            if self.on_reconnect is not None:
                try:
                    self.on_reconnect(cursor.since_ns / 1e9)
                except Exception:  # see _deliver
                    log.exception("reconnect callback failed")
            return True
        return False

    def _read_stream(self, client: DockerClient, filters: dict[str, list[str]], cursor: _Cursor) -> bool:
        """Deliver the stream's new events until it ends; returns whether dockerd looks down."""
        opened = time.monotonic()
        try:
            for raw in client.events(
                since=docker_time(cursor.since_ns), filters=filters, read_timeout=self.idle_timeout
            ):
                self.connected.set()
                event = DockerEvent.from_raw(raw)
                if cursor.is_new(event):
                    self._mark(cursor.stream, True, event=self._ends_quiet(event))
                    self.last_event_ns = max(self.last_event_ns, event.time_ns)
                    self._deliver(event)
                if self._stop.is_set():
                    return False
            return True  # dockerd closed the stream: it is going away
        except DockerUnavailable:
            # An idle stream times out after idle_timeout: just reopen it. A quick failure
            # means dockerd is not there.
            down = time.monotonic() - opened < self.idle_timeout * 0.9 or not _is_listening(self.host)
            if not down:
                self._mark(cursor.stream, True)
                self.connected.set()
            return down
        except DockerError as exc:  # e.g. 500 while dockerd shuts down
            log.debug("events stream error: %s", exc)
            return True


class _Cursor:
    """Where a stream resumes: the newest event time, and the events seen at exactly that time
    (``since`` is inclusive, so a reopened stream replays them)."""

    def __init__(self, since_ns: int, stream: str = "") -> None:
        self.stream = stream
        self.since_ns = since_ns
        self.seen: set[tuple[str, str, str]] = set()

    def is_new(self, event: DockerEvent) -> bool:
        """Whether the event was not delivered yet; moves the cursor to it."""
        key = (event.type, event.action, event.id)
        if event.time_ns < self.since_ns or (event.time_ns == self.since_ns and key in self.seen):
            return False
        if event.time_ns > self.since_ns:
            self.since_ns, self.seen = event.time_ns, set()
        self.seen.add(key)
        return True


def fetch_events(
    docker: DockerClient,
    record: AppliedRecord,
    *,
    since: float,
    until: float,
) -> list[DockerEvent]:
    """The project's events in dockerd's buffer between ``since`` and ``until``, in time order.

    Container events are asked for by the project's label (dockerd's buffer holds every
    project's: decoding them all cost a poll more than the rest of it); network and volume
    events, which carry no labels, in a second GET, only when the record has some.
    """
    actions = sorted(set(CONTAINER_ACTIONS) | set(_OBJECT_ACTIONS))
    start, end = docker_time(int(since * 1e9)), docker_time(int(until * 1e9))
    names = record.resource_names
    ids = record.container_ids
    label = {"type": ["container"], "event": actions, "label": [f"{LABEL_PROJECT}={record.project}"]}
    out = [
        event
        for event in map(DockerEvent.from_raw, docker.events(since=start, until=end, filters=label))
        if event.type == "container" and (event.project == record.project or event.id in ids)
    ]
    if names:
        objects = {"type": ["network", "volume"], "event": actions}
        raws = docker.events(since=start, until=end, filters=objects)
        out += [e for e in map(DockerEvent.from_raw, raws) if e.type != "container" and e.name in names]
        out.sort(key=lambda event: event.time_ns)  # stable: each GET's own order is kept
    return out


def check_drift(
    docker: DockerClient,
    record: AppliedRecord,
    *,
    events: Iterable[DockerEvent] | None = None,
    deep: bool = False,
    previous: DriftReport | None = None,
    secret_names: Collection[str] = (),
    observed: ObservedState | None = None,
    now: float | None = None,
) -> DriftReport:
    """Observe, inspect what needs it, and detect drift against ``record``.

    With ``events`` (from an EventWatcher) the check makes only the four list calls of a
    no-op reconcile, plus one inspect per container a ``docker update`` event touched.
    Without, it asks dockerd for the events since the apply (one more GET) to explain what
    happened. ``deep`` inspects every container (the periodic backstop).
    Raises DockerUnavailable when dockerd cannot be reached.
    """
    now = time.time() if now is None else now
    snapshot = observed if observed is not None else observe(docker)
    if events is None:
        events = fetch_events(docker, record, since=record.applied_at, until=now)
    history = list(events)
    inspected: dict[str, Any] = {}
    for ident in containers_to_inspect(record, snapshot, history, deep=deep):
        with contextlib.suppress(NotFound):  # removed since the list call: the next check sees it
            inspected[ident] = docker.inspect_container(ident)
    return detect_drift(
        record,
        snapshot,
        inspected,
        history,
        now=now,
        previous=previous,
        secret_names=secret_names,
    )
