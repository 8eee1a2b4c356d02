"""The desired Swarm stack of a project: Compose services mapped to Engine ServiceSpecs.

Each service becomes ``<project>_<service>`` (as ``docker stack deploy`` names it) with a
``io.gitdock.config-hash`` label over its whole spec, so the observe step's one list call
shows whether it is up to date, and a ``io.gitdock.swarm.task-hash`` over its task template,
so the executor knows whether the update starts a rolling update (tasks replaced) or only
changes the service (replicas, labels). Configs and secrets become Swarm objects named
``<project>_<key>_<hash8>`` by their content: new content is a new object, which changes the
spec of every service that mounts it (so Swarm rolls them), and the old one is removed once
no service uses it. Specs name configs, secrets and networks by name; the executor fills in
the ids Swarm wants.

This module is pure: the project, the Swarm-only inputs (``load``) and the pinned images in,
data out. Bad Swarm settings raise SwarmSpecError naming the field.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gitdock.runtime.labels import (
    LABEL_CONFIG_HASH,
    LABEL_NETWORK,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_VOLUME,
)
from gitdock.specs.errors import PermanentError
from gitdock.specs.model import Healthcheck, Mount, Network, Project, Service, ServiceFile
from gitdock.specs.schema import parse_bytes, parse_cpus, parse_duration

__all__ = [
    "LABEL_OBJECT_DIGEST",
    "LABEL_OBJECT_KEY",
    "LABEL_STACK",
    "LABEL_TASK_HASH",
    "DesiredNetwork",
    "DesiredObject",
    "DesiredService",
    "DesiredStack",
    "SwarmInputs",
    "SwarmSpecError",
    "desired_stack",
]

LABEL_TASK_HASH = "io.gitdock.swarm.task-hash"
LABEL_OBJECT_KEY = "io.gitdock.swarm.key"  # the project-level config or secret key
LABEL_OBJECT_DIGEST = "io.gitdock.swarm.digest"  # SHA-256 of its content
# docker's own stack label: ``docker stack ls``/``ps`` show a gitdock stack too.
LABEL_STACK = "com.docker.stack.namespace"

_UPDATE_ORDERS = ("stop-first", "start-first")
_FAILURE_ACTIONS = ("pause", "continue", "rollback")
_RESTART_CONDITIONS = {"none": "none", "on-failure": "on-failure", "any": "any"}


class SwarmSpecError(PermanentError):
    """A Swarm setting of the project cannot be mapped: names the field and the reason."""


@dataclass(frozen=True)
class SwarmInputs:
    """What the normalised model drops for a plain host (see ``gitdock.runtime.swarm.load``).

    ``deploy`` is each service's raw ``deploy`` mapping; ``host_ports`` the (target, protocol)
    published in ``mode: host``; ``external_files`` maps (kind, key) of an ``external`` config
    or secret to its Swarm name; ``external_refs`` each service's (kind, key, target) of those;
    ``file_contents`` the bytes of the config and secret files.
    """

    deploy: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    host_ports: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    attachable: frozenset[str] = frozenset()
    external_files: Mapping[tuple[str, str], str] = field(default_factory=dict)
    external_refs: Mapping[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)
    # The content of each config or secret read from a host file (the plain-host model
    # bind-mounts those instead), by path. Never printed.
    file_contents: Mapping[str, bytes] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class DesiredObject:
    """A config or secret version. ``kind`` is ``config`` or ``secret``; ``data`` never prints."""

    kind: str
    key: str
    name: str
    digest: str
    data: bytes = field(repr=False, compare=False)

    @property
    def resource(self) -> str:
        return f"{self.kind}:{self.key}"

    def body(self, project: str) -> dict[str, Any]:
        labels = {LABEL_PROJECT: project, LABEL_STACK: project, LABEL_OBJECT_KEY: self.key}
        labels[LABEL_OBJECT_DIGEST] = self.digest
        return {"Name": self.name, "Labels": labels, "Data": base64.b64encode(self.data).decode()}


@dataclass(frozen=True)
class DesiredNetwork:
    key: str
    name: str
    body: dict[str, Any] = field(compare=False)
    external: bool = False


@dataclass(frozen=True)
class DesiredService:
    """One service. ``spec`` names configs, secrets and networks by name (ids come at execute)."""

    service: str
    name: str
    spec: dict[str, Any] = field(compare=False)
    config_hash: str
    task_hash: str
    replicas: int | None  # None for mode: global
    image: str
    objects: tuple[str, ...] = ()  # names of the configs and secrets it mounts
    networks: tuple[str, ...] = ()  # names of the networks it joins

    @property
    def resource(self) -> str:
        return f"service:{self.service}"


@dataclass(frozen=True)
class DesiredStack:
    project: str
    services: tuple[DesiredService, ...]
    networks: tuple[DesiredNetwork, ...]
    objects: tuple[DesiredObject, ...]  # configs and secrets, every version in use
    external_objects: tuple[tuple[str, str], ...] = ()  # (kind, name) that must exist


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def desired_stack(
    project: Project, inputs: SwarmInputs, images: Mapping[str, str] | None = None
) -> DesiredStack:
    """The stack for ``project``; ``images`` maps a service to its digest-pinned reference."""
    objects: dict[str, DesiredObject] = {}
    for svc in project.services:
        for f in svc.files:
            obj = desired_object(project.name, f, inputs)
            objects[obj.name] = obj
    networks = tuple(desired_network(project.name, net, inputs) for net in project.networks)
    services = tuple(
        desired_service(project, svc, inputs, (images or {}).get(svc.name)) for svc in project.services
    )
    external = tuple(sorted({(kind[:-1], name) for (kind, _key), name in inputs.external_files.items()}))
    return DesiredStack(
        project=project.name,
        services=services,
        networks=networks,
        objects=tuple(sorted(objects.values(), key=lambda o: (o.kind, o.key, o.name))),
        external_objects=external,
    )


def desired_object(project: str, f: ServiceFile, inputs: SwarmInputs) -> DesiredObject:
    """The versioned Swarm object for one service file: ``<project>_<key>_<hash8>``."""
    data = f.content if f.content is not None else inputs.file_contents.get(f.source)
    if data is None:
        raise SwarmSpecError(f"{f.kind}.{f.name}: its content was not read (file {f.source!r})")
    digest = hashlib.sha256(data).hexdigest()
    return DesiredObject(
        kind=f.kind[:-1], key=f.name, name=f"{project}_{f.name}_{digest[:8]}", digest=digest, data=data
    )


def desired_network(project: str, net: Network, inputs: SwarmInputs) -> DesiredNetwork:
    """An overlay network (``driver: bridge``, the plain-host default, becomes overlay)."""
    driver = "overlay" if net.driver in ("bridge", "") else net.driver
    labels = dict(net.labels) | {LABEL_PROJECT: project, LABEL_NETWORK: net.key, LABEL_STACK: project}
    body: dict[str, Any] = {
        "Name": net.name,
        "Driver": driver,
        "Scope": "swarm",
        "CheckDuplicate": True,
        "Attachable": net.key in inputs.attachable,
        "Internal": net.internal,
        "Options": dict(net.driver_opts),
        "Labels": labels,
    }
    pools = [{"Subnet": s} for s in net.subnets]
    if net.pools:
        pools = [
            {k: v for k, v in (("Subnet", p.subnet), ("IPRange", p.ip_range), ("Gateway", p.gateway)) if v}
            for p in net.pools
        ]
    if pools or net.ipam_driver:
        body["IPAM"] = {
            "Driver": net.ipam_driver or "default",
            "Config": pools,
            "Options": dict(net.ipam_options),
        }
    return DesiredNetwork(key=net.key, name=net.name, body=body, external=net.external)


def desired_service(
    project: Project, svc: Service, inputs: SwarmInputs, pinned: str | None
) -> DesiredService:
    """The ServiceSpec of one service, with its two hash labels."""
    deploy = inputs.deploy.get(svc.name) or {}
    where = f"services.{svc.name}.deploy"
    image = pinned or svc.image
    task = _task_template(project, svc, inputs, deploy, where, image)
    mode, replicas = _mode(svc, deploy, where)
    labels = _str_map(deploy.get("labels"), f"{where}.labels")
    labels |= {LABEL_PROJECT: project.name, LABEL_SERVICE: svc.name, LABEL_STACK: project.name}
    spec: dict[str, Any] = {
        "Name": f"{project.name}_{svc.name}",
        "Labels": labels,
        "TaskTemplate": task,
        "Mode": mode,
        "UpdateConfig": _update_config(deploy.get("update_config"), f"{where}.update_config"),
        "RollbackConfig": _update_config(deploy.get("rollback_config"), f"{where}.rollback_config"),
        "EndpointSpec": _endpoint_spec(svc, inputs, deploy, where),
    }
    task_hash = _digest(task)
    labels[LABEL_TASK_HASH] = task_hash
    config_hash = _digest(spec)
    labels[LABEL_CONFIG_HASH] = config_hash
    objects = [ref.get("ConfigName") or ref.get("SecretName") for ref in _object_refs(task)]
    return DesiredService(
        service=svc.name,
        name=spec["Name"],
        spec=spec,
        config_hash=config_hash,
        task_hash=task_hash,
        replicas=replicas,
        image=image,
        objects=tuple(sorted(str(o) for o in objects)),
        networks=tuple(sorted(n["Target"] for n in task.get("Networks", []))),
    )


def _object_refs(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    container = task["ContainerSpec"]
    return [*container.get("Configs", []), *container.get("Secrets", [])]


def _mode(svc: Service, deploy: Mapping[str, Any], where: str) -> tuple[dict[str, Any], int | None]:
    if deploy.get("mode", "replicated") == "global":
        if deploy.get("replicas") is not None:
            raise SwarmSpecError(f"{where}.replicas: a service in mode: global has no replica count")
        return {"Global": {}}, None
    return {"Replicated": {"Replicas": svc.replicas}}, svc.replicas


def _task_template(
    project: Project, svc: Service, inputs: SwarmInputs, deploy: Mapping[str, Any], where: str, image: str
) -> dict[str, Any]:
    task: dict[str, Any] = {
        "ContainerSpec": _container_spec(project, svc, inputs, image),
        "RestartPolicy": _restart_policy(svc, deploy.get("restart_policy"), f"{where}.restart_policy"),
        "Placement": _placement(deploy.get("placement"), f"{where}.placement"),
        "Networks": [
            {"Target": project.network(key).name, "Aliases": sorted({svc.name, *att.aliases})}
            for key, att in svc.networks
        ],
    }
    resources = _resources(deploy.get("resources"), f"{where}.resources")
    if resources:
        task["Resources"] = resources
    return task


def _container_spec(project: Project, svc: Service, inputs: SwarmInputs, image: str) -> dict[str, Any]:
    labels = dict(svc.labels) | {
        LABEL_PROJECT: project.name,
        LABEL_SERVICE: svc.name,
        LABEL_STACK: project.name,
    }
    spec: dict[str, Any] = {
        "Image": image,
        "Labels": labels,
        "Env": sorted(f"{k}={v}" for k, v in svc.environment if v is not None),
        "Mounts": [_mount(project, m) for m in svc.mounts],
    }
    optional = {
        "Command": None if svc.entrypoint is None else list(svc.entrypoint),
        "Args": None if svc.command is None else list(svc.command),
        "User": svc.user,
        "Dir": svc.working_dir,
        "Hostname": svc.hostname,
        "Healthcheck": None if svc.healthcheck is None else _healthcheck(svc.healthcheck),
        "StopGracePeriod": None if svc.stop_grace_period is None else svc.stop_grace_period * 10**9,
    }
    spec |= {k: v for k, v in optional.items() if v is not None}
    configs = [_file_ref(project.name, f, inputs) for f in svc.files if f.kind == "configs"]
    secrets = [_file_ref(project.name, f, inputs) for f in svc.files if f.kind == "secrets"]
    for kind, key, target in inputs.external_refs.get(svc.name, ()):
        ref = _external_ref(kind, inputs.external_files[(kind, key)], target)
        (configs if kind == "configs" else secrets).append(ref)
    if configs:
        spec["Configs"] = sorted(configs, key=lambda r: r["File"]["Name"])
    if secrets:
        spec["Secrets"] = sorted(secrets, key=lambda r: r["File"]["Name"])
    return spec


def _file_ref(project: str, f: ServiceFile, inputs: SwarmInputs) -> dict[str, Any]:
    obj = desired_object(project, f, inputs)
    name_key = "ConfigName" if obj.kind == "config" else "SecretName"
    return {name_key: obj.name, "File": {"Name": f.target, "UID": f.uid, "GID": f.gid, "Mode": f.mode}}


def _external_ref(kind: str, name: str, target: str) -> dict[str, Any]:
    name_key = "ConfigName" if kind == "configs" else "SecretName"
    mode = 0o444
    return {name_key: name, "File": {"Name": target, "UID": "0", "GID": "0", "Mode": mode}}


def _mount(project: Project, m: Mount) -> dict[str, Any]:
    """A named volume is created on each node the task lands on, with the project's labels."""
    if m.type == "volume" and m.source:
        vol = project.volume(m.source)
        options: dict[str, Any] = {
            "Labels": dict(vol.labels) | {LABEL_PROJECT: project.name, LABEL_VOLUME: vol.key},
            "NoCopy": m.nocopy,
        }
        if not vol.external:
            options["DriverConfig"] = {"Name": vol.driver, "Options": dict(vol.driver_opts)}
        return {
            "Type": "volume",
            "Source": vol.name,
            "Target": m.target,
            "ReadOnly": m.read_only,
            "VolumeOptions": options,
        }
    if m.type == "tmpfs":
        tmpfs = {k: v for k, v in (("SizeBytes", m.tmpfs_size), ("Mode", m.tmpfs_mode)) if v is not None}
        return {"Type": "tmpfs", "Target": m.target, "TmpfsOptions": tmpfs}
    body: dict[str, Any] = {"Type": m.type, "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
    if m.type == "image" and m.image_subpath:  # Engine API 1.48's Mount.ImageOptions
        body["ImageOptions"] = {"Subpath": m.image_subpath}
    return body


def _healthcheck(hc: Healthcheck) -> dict[str, Any]:
    health: dict[str, Any] = {"Test": list(hc.test)}
    for key, value in (
        ("Interval", hc.interval_ns),
        ("Timeout", hc.timeout_ns),
        ("Retries", hc.retries),
        ("StartPeriod", hc.start_period_ns),
    ):
        if value:
            health[key] = value
    return health


def _str_map(value: Any, where: str) -> dict[str, str]:
    """A Compose mapping or ``KEY=VALUE`` list of strings."""
    if value is None:
        return {}
    if isinstance(value, list):
        return dict(_split_label(str(v)) for v in value)
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    raise SwarmSpecError(f"{where}: expected a mapping or a list of KEY=VALUE")


def _split_label(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key, value


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SwarmSpecError(f"{where}: expected a mapping")
    return value


def _parsed(parse: Any, value: Any, where: str) -> Any:
    """``parse(value)``, its failure as a SwarmSpecError naming ``where``."""
    try:
        return parse(value)
    except ValueError as exc:  # pydantic_core's PydanticCustomError is a ValueError
        raise SwarmSpecError(f"{where}: {exc}") from None


def _choice(value: Any, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise SwarmSpecError(f'{where}: "{value}" is not one of {", ".join(choices)}')
    return str(value)


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SwarmSpecError(f"{where}: expected a whole number, got {value!r}")
    return value


def _update_config(value: Any, where: str) -> dict[str, Any]:
    """Update or rollback config; Compose's defaults (parallelism 1, stop-first, pause)."""
    raw = _mapping(value, where)
    known = {"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"}
    for key in raw:
        if key not in known:
            raise SwarmSpecError(f"{where}.{key}: not an update setting ({', '.join(sorted(known))})")
    out: dict[str, Any] = {
        "Parallelism": _count(raw.get("parallelism", 1), f"{where}.parallelism"),
        "Order": _choice(raw.get("order", "stop-first"), _UPDATE_ORDERS, f"{where}.order"),
        "FailureAction": _choice(
            raw.get("failure_action", "pause"), _FAILURE_ACTIONS, f"{where}.failure_action"
        ),
    }
    if "delay" in raw:
        out["Delay"] = _parsed(parse_duration, raw["delay"], f"{where}.delay")
    if "monitor" in raw:
        out["Monitor"] = _parsed(parse_duration, raw["monitor"], f"{where}.monitor")
    if "max_failure_ratio" in raw:
        ratio = raw["max_failure_ratio"]
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
            raise SwarmSpecError(f"{where}.max_failure_ratio: expected a number from 0 to 1, got {ratio!r}")
        out["MaxFailureRatio"] = float(ratio)
    return out


def _restart_policy(svc: Service, value: Any, where: str) -> dict[str, Any]:
    """``deploy.restart_policy``, else the service's ``restart`` mapped onto Swarm's conditions."""
    if value is None:
        condition = {"no": "none", "always": "any", "unless-stopped": "any"}.get(svc.restart, "any")
        if svc.restart.startswith("on-failure"):
            condition = "on-failure"
        return {"Condition": condition}
    raw = _mapping(value, where)
    out: dict[str, Any] = {
        "Condition": _RESTART_CONDITIONS[
            _choice(raw.get("condition", "any"), tuple(_RESTART_CONDITIONS), f"{where}.condition")
        ]
    }
    if raw.get("max_attempts") is not None:
        out["MaxAttempts"] = _count(raw["max_attempts"], f"{where}.max_attempts")
    for key, api in (("delay", "Delay"), ("window", "Window")):
        if raw.get(key) is not None:
            out[api] = _parsed(parse_duration, raw[key], f"{where}.{key}")
    return out


def _placement(value: Any, where: str) -> dict[str, Any]:
    raw = _mapping(value, where)
    out: dict[str, Any] = {}
    constraints = raw.get("constraints") or []
    if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
        raise SwarmSpecError(f"{where}.constraints: expected a list of strings like node.role==manager")
    if constraints:
        out["Constraints"] = list(constraints)
    preferences = []
    for i, pref in enumerate(raw.get("preferences") or []):
        if not isinstance(pref, dict) or not isinstance(pref.get("spread"), str):
            raise SwarmSpecError(f"{where}.preferences[{i}]: expected {{spread: node.labels.NAME}}")
        preferences.append({"Spread": {"SpreadDescriptor": pref["spread"]}})
    if preferences:
        out["Preferences"] = preferences
    if raw.get("max_replicas_per_node") is not None:
        out["MaxReplicas"] = _count(raw["max_replicas_per_node"], f"{where}.max_replicas_per_node")
    return out


def _resources(value: Any, where: str) -> dict[str, Any]:
    raw = _mapping(value, where)
    out: dict[str, Any] = {}
    for part, api in (("limits", "Limits"), ("reservations", "Reservations")):
        section = _mapping(raw.get(part), f"{where}.{part}")
        body: dict[str, Any] = {}
        if section.get("cpus") is not None:
            body["NanoCPUs"] = int(_parsed(parse_cpus, section["cpus"], f"{where}.{part}.cpus") * 1e9)
        if section.get("memory") is not None:
            body["MemoryBytes"] = _parsed(parse_bytes, section["memory"], f"{where}.{part}.memory")
        if part == "limits" and section.get("pids") is not None:
            body["Pids"] = _count(section["pids"], f"{where}.limits.pids")
        if body:
            out[api] = body
    return out


def _endpoint_spec(
    svc: Service, inputs: SwarmInputs, deploy: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Ports in ingress mode (the routing mesh) unless the long syntax says ``mode: host``."""
    host = set(inputs.host_ports.get(svc.name, ()))
    ports = []
    for i, port in enumerate(svc.ports):
        if port.published is None:
            ports.append({"Protocol": port.protocol, "TargetPort": port.target, "PublishMode": "ingress"})
            continue
        first, _, last = port.published.partition("-")
        if last and last != first:
            raise SwarmSpecError(
                f"services.{svc.name}.ports[{i}]: a published port range is not supported on Swarm"
            )
        mode = "host" if (port.target, port.protocol) in host else "ingress"
        ports.append(
            {
                "Protocol": port.protocol,
                "TargetPort": port.target,
                "PublishedPort": int(first),
                "PublishMode": mode,
            }
        )
    mode = _choice(deploy.get("endpoint_mode", "vip"), ("vip", "dnsrr"), f"{where}.endpoint_mode")
    if mode == "dnsrr" and any(p["PublishMode"] == "ingress" for p in ports):
        raise SwarmSpecError(
            f"{where}.endpoint_mode: dnsrr cannot publish ports in ingress mode (use mode: host)"
        )
    return {"Mode": mode, "Ports": ports}
