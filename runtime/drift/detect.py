"""Drift: differences between the last applied record and the live host that gitdock did not cause.

``detect_drift`` is a purely computational function with no side effects. It compares an
AppliedRecord with an ObservedState (the same four list calls a no-op reconcile makes) and,
for containers that were inspected, with their inspect JSON; Docker events since the last
check only explain *what* happened (``killed (SIGKILL) at 12:01:03, exit 137``).

What the list calls show (cheap, every check): container existence, id (recreated by hand),
state, image id, attached networks; rogue containers carrying the project's label; missing
or recreated networks and volumes. What only an inspect shows (environment, restart policy,
resource limits, port bindings, mounts) is compared for the containers ``containers_to_inspect``
names: those a ``docker update`` event touched or that were recreated, or all with ``deep``.

All times are unix seconds; rendered times are UTC. Environment values whose name looks
secret (PASSWORD, SECRET, TOKEN, KEY, ...) or is in ``secret_names`` are shown as
``<redacted>``.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from gitdock.runtime.labels import LABEL_PROJECT
from gitdock.runtime.observe import ObservedContainer, ObservedState, is_one_shot
from gitdock.runtime.record import (
    RESOURCE_KEYS,
    AppliedContainer,
    AppliedRecord,
    ExpectedState,
    env_digest,
    is_env_digest,
    mount_keys,
    port_keys,
    restart_text,
)

__all__ = [
    "CONTAINER_ACTIONS",
    "REDACTED",
    "DockerEvent",
    "DriftField",
    "DriftItem",
    "DriftKind",
    "DriftReport",
    "containers_to_inspect",
    "detect_drift",
    "is_relevant_event",
    "is_secret_name",
    "plan_blind_spots",
]

REDACTED = "<redacted>"
_SECRET_NAME = re.compile(
    r"PASSW(OR)?D|PASSPHRASE|SECRET|TOKEN|KEY|CREDENTIAL|PRIVATE|AUTH|CERT|SALT|PWD|DSN", re.IGNORECASE
)
_ANONYMOUS_VOLUME = re.compile(r"^[0-9a-f]{64}$")
# A container that exits under a restarting policy is restarted by Docker within this window.
_RESTART_GRACE = 2.0
# The container actions that can mean drift (health checks' exec_* events cannot).
CONTAINER_ACTIONS = (
    "create",
    "start",
    "die",
    "kill",
    "stop",
    "destroy",
    "update",
    "rename",
    "pause",
    "unpause",
    "oom",
)


class DriftField(str, Enum):
    """Which aspect of a resource drifted."""

    EXISTENCE = "existence"
    ID = "id"
    NAME = "name"
    STATE = "state"
    IMAGE = "image"
    NETWORKS = "networks"
    ENVIRONMENT = "environment"
    PORTS = "ports"
    VOLUMES = "volumes"
    RESTART = "restart"
    MEMORY = "memory"
    MEMORY_RESERVATION = "memory_reservation"
    CPUS = "cpus"
    CPU_SHARES = "cpu_shares"
    PIDS_LIMIT = "pids_limit"


class DriftKind(str, Enum):
    MISSING = "missing"  # removed by hand
    RECREATED = "recreated"  # same name, another id
    CHANGED = "changed"  # same object, another value
    ROGUE = "rogue"  # carries the project's label, was not applied


_RESOURCE_FIELDS = {
    "Memory": DriftField.MEMORY,
    "MemoryReservation": DriftField.MEMORY_RESERVATION,
    "NanoCpus": DriftField.CPUS,
    "CpuShares": DriftField.CPU_SHARES,
    "PidsLimit": DriftField.PIDS_LIMIT,
}


@dataclass(frozen=True)
class DockerEvent:
    """One Docker event, reduced to what drift needs. ``id`` is the actor (a volume's name)."""

    type: str  # container, network, volume
    action: str
    id: str
    name: str
    time_ns: int
    attributes: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def time(self) -> float:
        return self.time_ns / 1e9

    @property
    def project(self) -> str | None:
        return self.attributes.get(LABEL_PROJECT)

    @property
    def container(self) -> str | None:
        """The container a network event is about (connect, disconnect)."""
        return self.attributes.get("container")

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> DockerEvent:
        """From ``GET /events`` JSON. Health status actions (``health_status: x``) keep their prefix."""
        actor = raw.get("Actor") or {}
        attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
        kind = str(raw.get("Type") or "")
        ident = str(actor.get("ID") or raw.get("id") or "")
        name = ident if kind == "volume" else attributes.get("name", "")
        time_ns = int(raw.get("timeNano") or int(raw.get("time") or 0) * 1_000_000_000)
        return cls(kind, str(raw.get("Action") or raw.get("status") or ""), ident, name, time_ns, attributes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "action": self.action,
            "id": self.id,
            "name": self.name,
            "timeNano": self.time_ns,
            "attributes": dict(self.attributes),
        }


@dataclass(frozen=True)
class DriftItem:
    """One difference. ``resource`` follows compose (``service:web:1``, ``network:backend``)."""

    resource: str
    field: DriftField
    kind: DriftKind
    desired: str
    live: str
    first_seen: float
    what: str = ""
    container: str = ""  # the live or recorded container name, when it is about one

    @property
    def key(self) -> tuple[str, str]:
        return self.resource, self.field.value

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "resource": self.resource,
            "field": self.field.value,
            "kind": self.kind.value,
            "desired": self.desired,
            "live": self.live,
            "firstSeen": _iso(self.first_seen),
            "what": self.what,
        }
        if self.container:
            data["container"] = self.container
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftItem:
        return cls(
            resource=str(data["resource"]),
            field=DriftField(data["field"]),
            kind=DriftKind(data["kind"]),
            desired=str(data.get("desired", "")),
            live=str(data.get("live", "")),
            first_seen=datetime.fromisoformat(str(data["firstSeen"])).timestamp(),
            what=str(data.get("what", "")),
            container=str(data.get("container", "")),
        )


@dataclass(frozen=True)
class DriftReport:
    """Every drift item of one project at ``checked_at``, sorted by resource then field."""

    project: str
    items: tuple[DriftItem, ...]
    checked_at: float
    applied_at: float = 0.0
    revision: str | None = None
    inspected: int = 0  # containers whose inspect was compared

    @property
    def has_drift(self) -> bool:
        return bool(self.items)

    @property
    def resources(self) -> list[str]:
        return sorted({i.resource for i in self.items})

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "drift": self.has_drift,
            "checkedAt": _iso(self.checked_at),
            "appliedAt": _iso(self.applied_at) if self.applied_at else None,
            "revision": self.revision,
            "inspected": self.inspected,
            "items": [i.to_dict() for i in self.items],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftReport:
        return cls(
            project=str(data["project"]),
            items=tuple(DriftItem.from_dict(i) for i in data.get("items") or ()),
            checked_at=datetime.fromisoformat(str(data["checkedAt"])).timestamp(),
            applied_at=datetime.fromisoformat(str(data["appliedAt"])).timestamp()
            if data.get("appliedAt")
            else 0.0,
            revision=data.get("revision"),
            inspected=int(data.get("inspected") or 0),
        )

    def render_text(self) -> str:
        if not self.items:
            return f"project {self.project}: no drift"
        header = ("RESOURCE", "FIELD", "DESIRED", "LIVE", "FIRST SEEN", "WHAT")
        rows = [header] + [
            (i.resource, i.field.value, i.desired, i.live, _clock(i.first_seen), i.what or "-")
            for i in self.items
        ]
        widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
        lines = [f"project {self.project}: {len(self.items)} drift item(s)"]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        return "\n".join(lines)

    def render_markdown(self) -> str:
        if not self.items:
            return f"**{_md(self.project)}**: no drift"
        lines = [
            f"**{_md(self.project)}**: {len(self.items)} drift item(s)",
            "",
            "| resource | field | desired | live | first seen | what |",
            "|---|---|---|---|---|---|",
        ]
        for i in self.items:
            cells = (i.resource, i.field.value, i.desired, i.live, _iso(i.first_seen), i.what)
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
        return "\n".join(lines)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _listed(values: Iterable[str]) -> str:
    return ", ".join(sorted(values)) or "none"


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def is_secret_name(name: str, secret_names: Collection[str] = ()) -> bool:
    """Whether an environment variable's value must not be shown. Pure."""
    return name in secret_names or bool(_SECRET_NAME.search(name))


def _env_map(entries: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for entry in entries:
        key, _, value = entry.partition("=")
        out[key] = value
    return out


def _env_matches(want: str, have: str | None) -> bool:
    if have is not None and is_env_digest(want):
        return env_digest(have) == want
    return have == want


def _show_env(key: str, value: str | None, secret_names: Collection[str]) -> str:
    if value is None:
        return f"{key} unset"
    return f"{key}={REDACTED if is_secret_name(key, secret_names) else value}"


def _bytes(value: int) -> str:
    if value <= 0:
        return "unlimited"
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if value >= size and value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}B"


def _resource_text(key: str, value: int) -> str:
    if key in ("Memory", "MemoryReservation"):
        return _bytes(value)
    if key == "NanoCpus":
        return "unlimited" if value <= 0 else f"{value / 1e9:g}"
    if key == "PidsLimit":
        return "unlimited" if value <= 0 else str(value)
    return "default" if value <= 0 else str(value)


def _signal_name(number: str) -> str:
    try:
        return signal.Signals(int(number)).name
    except ValueError:
        return f"signal {number}"


class _Events:
    """Events grouped for lookups: by container id, by network/volume name."""

    def __init__(self, events: Iterable[DockerEvent]) -> None:
        self.by_container: dict[str, list[DockerEvent]] = {}
        self.by_name: dict[tuple[str, str], list[DockerEvent]] = {}
        for e in sorted(events, key=lambda e: e.time_ns):
            if e.type == "container":
                self.by_container.setdefault(e.id, []).append(e)
            else:
                self.by_name.setdefault((e.type, e.name), []).append(e)

    def container(self, ident: str) -> list[DockerEvent]:
        return self.by_container.get(ident, [])

    def last(self, ident: str, *actions: str) -> DockerEvent | None:
        for e in reversed(self.container(ident)):
            if e.action in actions:
                return e
        return None

    def named(self, kind: str, name: str, action: str) -> DockerEvent | None:
        for e in reversed(self.by_name.get((kind, name), [])):
            if e.action == action:
                return e
        return None


def _why_stopped(live: ObservedContainer, events: _Events) -> str:
    """Explain a container that is not running, from its events (or its status line)."""
    die = events.last(live.id, "die")
    if die is None:
        code = live.exit_code
        return f"exited, exit {code}" if code is not None else live.status.lower()
    exit_text = f"exit {die.attributes.get('exitCode', '?')}"
    before = [e for e in events.container(live.id) if e.time_ns <= die.time_ns + 50_000_000]
    actions = {e.action: e for e in before if die.time_ns - e.time_ns < 60_000_000_000}
    stop = events.last(live.id, "stop")
    if stop is not None and stop.time_ns >= die.time_ns:
        return f"stopped by hand at {_clock(die.time)}, {exit_text}"
    if "oom" in actions:
        return f"killed: out of memory at {_clock(die.time)}, {exit_text}"
    if "kill" in actions:
        sig = _signal_name(actions["kill"].attributes.get("signal", "?"))
        return f"killed ({sig}) at {_clock(die.time)}, {exit_text}"
    return f"exited at {_clock(die.time)}, {exit_text}"


def _is_restarting(live: ObservedContainer, restart: str, events: _Events, now: float) -> bool:
    """Docker itself is restarting the container (its policy), so it is not drift (yet)."""
    if live.state == "restarting":
        return True
    if live.state != "exited":
        return False
    policy, _, _ = restart.partition(":")
    die = events.last(live.id, "die", "stop")
    if die is None or die.action != "die" or now - die.time > _RESTART_GRACE:
        return False
    if policy in ("always", "unless-stopped"):
        return True
    return policy == "on-failure" and die.attributes.get("exitCode", "0") != "0"


def _state_text(live: ObservedContainer) -> str:
    if live.state == "exited" and live.exit_code is not None:
        return f"exited ({live.exit_code})"
    return live.state


def _short(ident: str) -> str:
    return ident.removeprefix("sha256:")[:12]


class _Detector:
    def __init__(
        self,
        record: AppliedRecord,
        observed: ObservedState,
        inspected: Mapping[str, Mapping[str, Any]],
        events: _Events,
        now: float,
        previous: Mapping[tuple[str, str], DriftItem],
        secret_names: Collection[str],
    ) -> None:
        self.record = record
        self.observed = observed
        self.inspected = inspected
        self.events = events
        self.now = now
        self.previous = previous
        self.secret_names = secret_names
        self.items: list[DriftItem] = []
        self.by_name = {c.name: c for c in observed.containers}
        self.by_id = {c.id: c for c in observed.containers}

    def add(
        self,
        resource: str,
        fld: DriftField,
        kind: DriftKind,
        desired: str,
        live: str,
        what: str = "",
        container: str = "",
    ) -> None:
        before = self.previous.get((resource, fld.value))
        seen = before.first_seen if before is not None else self.now
        if before is not None and " at " in before.what and " at " not in what:
            what = before.what  # the event that explained it has left dockerd's buffer
        self.items.append(DriftItem(resource, fld, kind, desired, live, seen, what, container))

    def run(self) -> list[DriftItem]:
        matched: set[str] = set()
        for rc in self.record.containers:
            live = self.by_name.get(rc.name) or self.by_id.get(rc.id)
            if live is None:
                self.missing_container(rc)
                continue
            matched.add(live.id)
            self.container(rc, live)
        self.rogues(matched)
        self.networks()
        self.volumes()
        return sorted(self.items, key=lambda i: (i.resource, i.field.value, i.container))

    def missing_container(self, rc: AppliedContainer) -> None:
        destroy = self.events.last(rc.id, "destroy")
        what = f"removed at {_clock(destroy.time)}" if destroy else "removed"
        self.add(
            rc.resource, DriftField.EXISTENCE, DriftKind.MISSING, rc.expect.value, "missing", what, rc.name
        )

    def container(self, rc: AppliedContainer, live: ObservedContainer) -> None:
        res = rc.resource
        if live.id != rc.id:
            created = self.events.last(live.id, "create")
            what = f"recreated by hand at {_clock(created.time)}" if created else "recreated by hand"
            self.add(res, DriftField.ID, DriftKind.RECREATED, _short(rc.id), _short(live.id), what, live.name)
        elif live.name != rc.name:
            renamed = self.events.last(live.id, "rename")
            what = f"renamed at {_clock(renamed.time)}" if renamed else "renamed"
            self.add(res, DriftField.NAME, DriftKind.CHANGED, rc.name, live.name, what, live.name)
        inspect = self.inspected.get(live.id)
        restart = rc.restart
        if inspect is not None:
            restart = restart_text((inspect.get("HostConfig") or {}).get("RestartPolicy"))
        self.state(rc, live, restart)
        if rc.image_id and live.image_id and live.image_id != rc.image_id:
            self.add(
                res,
                DriftField.IMAGE,
                DriftKind.CHANGED,
                f"{rc.image} ({_short(rc.image_id)})",
                f"{live.image} ({_short(live.image_id)})",
                container=live.name,
            )
        self.container_networks(rc, live)
        if inspect is not None:
            self.inspected_fields(rc, live, inspect)

    def state(self, rc: AppliedContainer, live: ObservedContainer, restart: str) -> None:
        if rc.expect is ExpectedState.COMPLETED:
            if live.state in ("running", "restarting") or (live.state == "exited" and live.exit_code == 0):
                return
        elif live.state == "running" or _is_restarting(live, restart, self.events, self.now):
            return
        what = _why_stopped(live, self.events) if live.state in ("exited", "dead") else ""
        if live.state == "paused":
            paused = self.events.last(live.id, "pause")
            what = f"paused by hand at {_clock(paused.time)}" if paused else "paused"
        desired = "exited (0)" if rc.expect is ExpectedState.COMPLETED else "running"
        self.add(
            rc.resource, DriftField.STATE, DriftKind.CHANGED, desired, _state_text(live), what, live.name
        )

    def container_networks(self, rc: AppliedContainer, live: ObservedContainer) -> None:
        want, have = set(rc.networks), set(live.networks)
        if want == have:
            return
        whats = []
        for name in sorted(want - have):
            e = self._network_event(name, "disconnect", live.id)
            whats.append(f"disconnected from network {name}" + (f" at {_clock(e.time)}" if e else ""))
        for name in sorted(have - want):
            e = self._network_event(name, "connect", live.id)
            whats.append(f"connected to network {name}" + (f" at {_clock(e.time)}" if e else ""))
        self.changed_set(rc, live.name, DriftField.NETWORKS, want, have, "; ".join(whats))

    def _network_event(self, name: str, action: str, container: str) -> DockerEvent | None:
        for e in reversed(self.events.by_name.get(("network", name), [])):
            if e.action == action and e.container == container:
                return e
        return None

    def inspected_fields(
        self, rc: AppliedContainer, live: ObservedContainer, inspect: Mapping[str, Any]
    ) -> None:
        """Compare what only an inspect shows: restart policy, limits, env, ports, mounts."""
        host = inspect.get("HostConfig") or {}
        config = inspect.get("Config") or {}
        update = self.events.last(live.id, "update")
        updated = f"updated at {_clock(update.time)}: " if update else "updated: "
        self.restart_policy(rc, live.name, host, updated)
        self.resource_limits(rc, live.name, host, updated)
        self.environment(rc, live.name, config)
        self.port_bindings(rc, live.name, host)
        self.mounts(rc, live.name, host)

    def restart_policy(self, rc: AppliedContainer, name: str, host: Mapping[str, Any], updated: str) -> None:
        live_restart = restart_text(host.get("RestartPolicy"))
        if live_restart != rc.restart:
            what = f"{updated}restart {rc.restart} → {live_restart}"
            self.add(rc.resource, DriftField.RESTART, DriftKind.CHANGED, rc.restart, live_restart, what, name)

    def resource_limits(self, rc: AppliedContainer, name: str, host: Mapping[str, Any], updated: str) -> None:
        wanted = dict(rc.resources)
        for key in RESOURCE_KEYS:
            want_value = int(wanted.get(key, 0))
            have_value = int(host.get(key) or 0)
            if key == "PidsLimit":
                have_value = max(have_value, 0)  # -1 and 0 both mean unlimited
            if want_value != have_value:
                fld = _RESOURCE_FIELDS[key]
                desired, got = _resource_text(key, want_value), _resource_text(key, have_value)
                what = f"{updated}{fld.value} {desired} → {got}"
                self.add(rc.resource, fld, DriftKind.CHANGED, desired, got, what, name)

    def environment(self, rc: AppliedContainer, name: str, config: Mapping[str, Any]) -> None:
        want_env, have_env = _env_map(rc.env), _env_map(config.get("Env") or ())
        changed = sorted(k for k, v in want_env.items() if not _env_matches(v, have_env.get(k)))
        # Values recorded as digests came from SOPS files: never shown, live or wanted.
        hidden = {*self.secret_names, *(k for k, v in want_env.items() if is_env_digest(v))}
        if changed:
            self.add(
                rc.resource,
                DriftField.ENVIRONMENT,
                DriftKind.CHANGED,
                ", ".join(_show_env(k, want_env[k], hidden) for k in changed),
                ", ".join(_show_env(k, have_env.get(k), hidden) for k in changed),
                container=name,
            )

    def port_bindings(self, rc: AppliedContainer, name: str, host: Mapping[str, Any]) -> None:
        self.changed_set(rc, name, DriftField.PORTS, rc.ports, port_keys(host.get("PortBindings")))

    def mounts(self, rc: AppliedContainer, name: str, host: Mapping[str, Any]) -> None:
        live_mounts = {
            m for m in mount_keys(host) if not (m.startswith("volume:") and _is_anonymous(m, rc.mounts))
        }
        want_mounts = {m for m in rc.mounts if not m.startswith("volume::")}
        self.changed_set(rc, name, DriftField.VOLUMES, want_mounts, live_mounts)

    def changed_set(
        self,
        rc: AppliedContainer,
        name: str,
        fld: DriftField,
        want: Collection[str],
        have: Collection[str],
        what: str = "",
    ) -> None:
        """One CHANGED item when two sets differ, each shown sorted (``none`` when empty)."""
        if set(want) != set(have):
            self.add(rc.resource, fld, DriftKind.CHANGED, _listed(want), _listed(have), what, name)

    def rogues(self, matched: set[str]) -> None:
        project = self.record.project
        for c in self.observed.containers:
            if c.project != project or c.id in matched:
                continue
            created = self.events.last(c.id, "create")
            what = f"created at {_clock(created.time)}" if created else "not created by gitdock"
            self.add(
                f"container:{c.name}",
                DriftField.EXISTENCE,
                DriftKind.ROGUE,
                "absent",
                _state_text(c),
                what,
                c.name,
            )

    def networks(self) -> None:
        for net in self.record.networks:
            live = self.observed.network_named(net.name)
            if live is None:
                e = self.events.named("network", net.name, "destroy")
                what = f"removed at {_clock(e.time)}" if e else "removed"
                self.add(net.resource, DriftField.EXISTENCE, DriftKind.MISSING, net.name, "missing", what)
            elif live.id != net.id:
                e = self.events.named("network", net.name, "create")
                what = f"recreated by hand at {_clock(e.time)}" if e else "recreated by hand"
                self.add(
                    net.resource, DriftField.ID, DriftKind.RECREATED, _short(net.id), _short(live.id), what
                )

    def volumes(self) -> None:
        for vol in self.record.volumes:
            if self.observed.volume_named(vol.name) is None:
                e = self.events.named("volume", vol.name, "destroy")
                what = f"removed at {_clock(e.time)}" if e else "removed"
                self.add(vol.resource, DriftField.EXISTENCE, DriftKind.MISSING, vol.name, "missing", what)


def _is_anonymous(key: str, wanted: Sequence[str]) -> bool:
    """A live volume mount whose source is a generated name (anonymous, or the image's VOLUME)."""
    _, source, rest = key.split(":", 2)
    return bool(_ANONYMOUS_VOLUME.match(source)) or f"volume::{rest}" in wanted


def containers_to_inspect(
    record: AppliedRecord,
    observed: ObservedState,
    events: Iterable[DockerEvent] = (),
    *,
    deep: bool = False,
) -> list[str]:
    """Ids of the live containers whose inspect the check needs. Pure.

    Those a ``docker update`` event touched, those recreated by hand (their whole config is
    unknown), and with ``deep`` every container of the record that still exists.
    """
    updated = {e.id for e in events if e.type == "container" and e.action == "update"}
    ids: list[str] = []
    for rc in record.containers:
        live = observed.container_named(rc.name)
        if live is None:
            continue
        if deep or live.id != rc.id or live.id in updated:
            ids.append(live.id)
    return ids


def detect_drift(
    record: AppliedRecord,
    observed: ObservedState,
    inspected: Mapping[str, Mapping[str, Any]] | None = None,
    events: Iterable[DockerEvent] = (),
    *,
    now: float,
    previous: DriftReport | None = None,
    secret_names: Collection[str] = (),
) -> DriftReport:
    """Compare the applied ``record`` with the live state. Pure: no side effects, no I/O.

    ``inspected`` maps container ids to their inspect JSON (see ``containers_to_inspect``);
    ``events`` (since the apply or the last check) explain what happened; ``previous`` carries
    each item's ``first_seen`` over. A container Docker is restarting by its own restart
    policy is not drift.
    """
    before = {i.key: i for i in previous.items} if previous is not None else {}
    detector = _Detector(
        record,
        observed,
        inspected or {},
        _Events(events),
        now,
        before,
        frozenset(secret_names),
    )
    items = detector.run()
    return DriftReport(
        project=record.project,
        items=tuple(items),
        checked_at=now,
        applied_at=record.applied_at,
        revision=record.revision,
        inspected=len(inspected or {}),
    )


def is_relevant_event(event: DockerEvent) -> bool:
    """Whether an event can mean drift (health checks' exec_* events cannot). Pure."""
    if event.type == "container":
        return event.action in CONTAINER_ACTIONS
    if event.type == "network":
        return event.action in ("connect", "disconnect", "destroy", "create")
    return event.type == "volume" and event.action in ("destroy", "create")


# Fields the planner cannot see (it compares config-hash labels, not live settings): a
# converge alone does not repair them, so healing recreates the container.
_RECREATE_FIELDS = frozenset(
    {
        DriftField.NETWORKS,
        DriftField.ENVIRONMENT,
        DriftField.PORTS,
        DriftField.VOLUMES,
        DriftField.RESTART,
        DriftField.MEMORY,
        DriftField.MEMORY_RESERVATION,
        DriftField.CPUS,
        DriftField.CPU_SHARES,
        DriftField.PIDS_LIMIT,
    }
)


def plan_blind_spots(report: DriftReport, record: AppliedRecord) -> tuple[list[str], list[str]]:
    """Drift a converge would not repair: ``(containers to start, containers to recreate)``. Pure.

    The planner leaves a container that exited 0 under restart ``no``/``on-failure`` alone
    (a finished job), so one stopped by hand must be started; a setting changed in place
    (``docker update``, ``network disconnect``) keeps its config hash, so that container must
    be recreated. Names are live container names.
    """
    start: set[str] = set()
    recreate: set[str] = set()
    for item in report.items:
        rc = record.container_named(item.container) if item.container else None
        if rc is None:
            continue
        if item.field in _RECREATE_FIELDS:
            recreate.add(item.container)
        elif (
            item.field is DriftField.STATE
            and item.live in ("exited (0)", "created")
            and is_one_shot(rc.restart)
        ):
            start.add(item.container)
    return sorted(start - recreate), sorted(recreate)
