"""From a Project to the Docker objects it asks for: names, labels, config hashes, API bodies.

The whole Compose -> Engine API mapping lives here: the spec model speaks Compose (its
``Service.extra`` settings are keyed by Compose key), and ``engine_settings`` turns those
into Engine API fields by one table (``_ENGINE_PATHS``) plus the few that need a shape
(``_ENGINE_SHAPES``: devices, ulimits, logging, CPUs, links, volumes_from).

This is a purely computational module: no I/O, no Docker client. The planner compares its
output with the observed state; the executor sends its bodies to the Engine API.

Config hashes are what make a no-op reconcile cheap: every container, network and volume
gitdock creates carries the hash of the normalised config that produced it, plus a short
hash per field (``io.gitdock.config-fields``), so the planner can tell *which* fields
changed from a label-filtered list call alone, without one inspect per container.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gitdock.runtime import labels
from gitdock.runtime.labels import (
    LABEL_CONFIG_FIELDS,
    LABEL_CONFIG_HASH,
    LABEL_IMAGE,
    LABEL_IMAGE_DIGEST,
    LABEL_IMAGE_TRUST,
    LABEL_NETWORK,
    LABEL_NUMBER,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_VOLUME,
)
from gitdock.specs.model import Healthcheck, Mount, Network, Project, Service, ServiceFile, Volume

if TYPE_CHECKING:
    from gitdock.runtime.trust.resolve import ResolvedImage


# Service fields that do not change the container itself, so they stay out of its hash.
_UNHASHED_FIELDS = frozenset(
    {
        "name",
        "replicas",
        "depends_on",
        "position",
        "container_name",
        "stop_grace_period",  # hashed with extra, as its Engine field (StopTimeout)
        "pull_policy",  # decides when to pull, not what the container is
        "profiles",  # decides whether the service exists, not what it is
    }
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """Dataclasses and enums into JSON-able values, keeping tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "position"
        }
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value
    return value


def container_name(project: str, service: Service, number: int) -> str:
    """Compose's naming: ``container_name`` if set, else ``<project>-<service>-<n>``."""
    return labels.container_name(project, service.name, number, service.container_name)


@dataclass(frozen=True)
class DesiredContainer:
    """One container the project asks for, ready to create."""

    project: str
    service: str
    number: int
    name: str
    image: str
    config_hash: str
    field_hashes: tuple[tuple[str, str], ...]
    create_body: dict[str, Any]  # POST /containers/create body; NetworkMode may name a service
    # Docker network names, in order; the first is attached at create, the rest by connect.
    networks: tuple[tuple[str, tuple[str, ...]], ...]
    network_mode_service: str | None  # "service:NAME" resolves to that service's container
    stop_timeout: int = 10
    # Configs and secrets with inline content: copied in after create, before start.
    files: tuple[ServiceFile, ...] = ()
    platform: str | None = None

    @property
    def resource(self) -> str:
        return labels.service_resource(self.service, self.number)


@dataclass(frozen=True)
class DesiredNetwork:
    key: str
    name: str
    external: bool
    config_hash: str
    create_body: dict[str, Any]

    @property
    def resource(self) -> str:
        return labels.network_resource(self.key)


@dataclass(frozen=True)
class DesiredVolume:
    key: str
    name: str
    external: bool
    config_hash: str
    create_body: dict[str, Any]
    fields: tuple[tuple[str, str], ...]

    @property
    def resource(self) -> str:
        return labels.volume_resource(self.key)


def service_field_hashes(project: Project, service: Service) -> dict[str, str]:
    """A short hash per Compose field of the service, for 'config changed: a, b' causes."""
    network_names = {n.key: n.name for n in project.networks}
    fields: dict[str, str] = {}
    for f in dataclasses.fields(service):
        if f.name in _UNHASHED_FIELDS:
            continue
        value = _plain(getattr(service, f.name))
        if f.name == "networks":
            # The Docker names matter too: renaming a network must recreate its containers.
            value = [[network_names.get(k, k), v] for k, v in value]
        if f.name == "extra":
            # The Engine API fragments, grouped under the Compose key the user wrote (cap_add).
            # Their paths and shapes are hashed: changing either recreates every container.
            for key, path, extra_value in engine_settings(project, service):
                top = key.split(".", 1)[0]
                fields[top] = _digest([fields.get(top, ""), path, _plain(extra_value)])[:12]
            continue
        if f.name == "files":
            # The content's digest is in the hash: a changed config or secret recreates.
            for file in service.files:
                entry = [file.name, file.target, file.digest, file.source, file.mode, file.uid, file.gid]
                fields[file.kind] = _digest([fields.get(file.kind, ""), entry])[:12]
            continue
        if value in (None, [], {}, ""):
            continue  # absent and default hash the same, so adding a default changes nothing
        fields[_field_label(f.name)] = _digest(value)[:12]
    return dict(sorted(fields.items()))


def _field_label(name: str) -> str:
    # Report the Compose key a user wrote, not our model's attribute name.
    return {"mounts": "volumes"}.get(name, name)


# --- Service.extra: Compose keys to Engine API fields ------------------------------------

# Compose keys whose normalised value the Engine takes as it is: key -> dotted API path.
# Paths under HostConfig. go into the host config, the others into the container config.
_ENGINE_PATHS = {
    "annotations": "HostConfig.Annotations",
    "cap_add": "HostConfig.CapAdd",
    "cap_drop": "HostConfig.CapDrop",
    "cgroup": "HostConfig.CgroupnsMode",
    "cgroup_parent": "HostConfig.CgroupParent",
    "cpu_period": "HostConfig.CpuPeriod",
    "cpu_quota": "HostConfig.CpuQuota",
    "cpu_shares": "HostConfig.CpuShares",
    "cpuset": "HostConfig.CpusetCpus",
    "device_cgroup_rules": "HostConfig.DeviceCgroupRules",
    "dns": "HostConfig.Dns",
    "dns_opt": "HostConfig.DnsOptions",
    "dns_search": "HostConfig.DnsSearch",
    "domainname": "Domainname",
    "extra_hosts": "HostConfig.ExtraHosts",
    "group_add": "HostConfig.GroupAdd",
    "init": "HostConfig.Init",
    "ipc": "HostConfig.IpcMode",
    "mac_address": "MacAddress",
    "mem_swappiness": "HostConfig.MemorySwappiness",
    "memswap_limit": "HostConfig.MemorySwap",
    "oom_kill_disable": "HostConfig.OomKillDisable",
    "oom_score_adj": "HostConfig.OomScoreAdj",
    "pid": "HostConfig.PidMode",
    "privileged": "HostConfig.Privileged",
    "read_only": "HostConfig.ReadonlyRootfs",
    "runtime": "HostConfig.Runtime",
    "security_opt": "HostConfig.SecurityOpt",
    "shm_size": "HostConfig.ShmSize",
    "stdin_open": "OpenStdin",
    "stop_signal": "StopSignal",
    "storage_opt": "HostConfig.StorageOpt",
    "sysctls": "HostConfig.Sysctls",
    "tty": "Tty",
    "userns_mode": "HostConfig.UsernsMode",
    "uts": "HostConfig.UTSMode",
    # Resources: the service key or its deploy.resources path, whichever the spec used.
    "mem_limit": "HostConfig.Memory",
    "deploy.resources.limits.memory": "HostConfig.Memory",
    "pids_limit": "HostConfig.PidsLimit",
    "deploy.resources.limits.pids": "HostConfig.PidsLimit",
    "mem_reservation": "HostConfig.MemoryReservation",
    "deploy.resources.reservations.memory": "HostConfig.MemoryReservation",
}


def _nano_cpus(project: Project, cpus: float) -> int:
    return round(float(cpus) * 1e9)


def _devices(project: Project, devices: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        {"PathOnHost": d["source"], "PathInContainer": d["target"], "CgroupPermissions": d["permissions"]}
        for d in devices
    ]


def _ulimits(project: Project, ulimits: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [{"Name": name, "Soft": limit["soft"], "Hard": limit["hard"]} for name, limit in ulimits.items()]


def _log_config(project: Project, logging: dict[str, Any]) -> dict[str, Any]:
    return {"Type": logging["driver"], "Config": logging["options"]}


def _first_container(project: Project, service: str) -> str:
    """The container a link or volumes_from names for a service: its first replica."""
    explicit = next((s.container_name for s in project.services if s.name == service), None)
    return labels.container_name(project.name, service, 1, explicit)


def _links(project: Project, links: list[str]) -> list[str]:
    out = []
    for link in links:
        service, _, alias = link.partition(":")
        out.append(f"{_first_container(project, service)}:{alias or service}")
    return out


def _volumes_from(project: Project, entries: list[str]) -> list[str]:
    out = []
    for entry in entries:
        if entry.startswith("container:"):
            out.append(entry.removeprefix("container:"))
            continue
        service, sep, mode = entry.partition(":")
        out.append(_first_container(project, service) + (f":{mode}" if sep else ""))
    return out


# Compose keys whose value the Engine takes in its own shape: key -> (API path, shaper).
_ENGINE_SHAPES: dict[str, tuple[str, Callable[[Project, Any], Any]]] = {
    "cpus": ("HostConfig.NanoCpus", _nano_cpus),
    "deploy.resources.limits.cpus": ("HostConfig.NanoCpus", _nano_cpus),
    "devices": ("HostConfig.Devices", _devices),
    "links": ("HostConfig.Links", _links),
    "logging": ("HostConfig.LogConfig", _log_config),
    "ulimits": ("HostConfig.Ulimits", _ulimits),
    "volumes_from": ("HostConfig.VolumesFrom", _volumes_from),
}


def engine_settings(project: Project, service: Service) -> list[tuple[str, str, Any]]:
    """(Compose key, dotted Engine API path, value) of the service's further settings
    (``Service.extra`` and stop_grace_period), ordered by path. Pure."""
    out: list[tuple[str, str, Any]] = []
    for key, value in service.extra:
        if key == "expose":
            out += [(key, f"ExposedPorts.{port}", {}) for port in value]
        elif key in _ENGINE_SHAPES:
            path, shape = _ENGINE_SHAPES[key]
            out.append((key, path, shape(project, value)))
        else:
            out.append((key, _ENGINE_PATHS[key], value))
    if service.stop_grace_period is not None:
        out.append(("stop_grace_period", "StopTimeout", service.stop_grace_period))
    return sorted(out, key=lambda setting: setting[1])


# --- the container ---------------------------------------------------------------------


def desired_container(
    project: Project, service: Service, number: int, image: ResolvedImage | None = None
) -> DesiredContainer:
    """Everything needed to create container ``number`` of ``service``. Pure.

    With a resolved ``image`` the container is created from ``<repository>@<digest>``, so
    nothing can change between verification and pull, and it carries the lock record.
    """
    fields = service_field_hashes(project, service)
    config_hash = _digest(fields)
    config = _container_config(service, image, _container_labels(project, service, number, fields, image))
    host, exposed = _host_config(project, service)
    if exposed:
        config["ExposedPorts"] = exposed
    networks, mode_service = _attach(project, service, host)
    for _key, path, value in engine_settings(project, service):
        _set_path(host if path.startswith("HostConfig.") else config, path, value)
    config["HostConfig"] = host
    if networks:
        config["NetworkingConfig"] = _networking_config(networks, host)
    return DesiredContainer(
        project=project.name,
        service=service.name,
        number=number,
        name=container_name(project.name, service, number),
        image=image.pinned if image is not None else service.image,
        config_hash=config_hash,
        field_hashes=tuple(fields.items()),
        create_body=config,
        networks=tuple(networks),
        network_mode_service=mode_service,
        stop_timeout=10 if service.stop_grace_period is None else service.stop_grace_period,
        files=tuple(f for f in service.files if f.content is not None),
        platform=service.platform,
    )


def _container_labels(
    project: Project, service: Service, number: int, fields: dict[str, str], image: ResolvedImage | None
) -> dict[str, str]:
    """The service's labels plus gitdock's: ownership, config hashes, the image lock record."""
    out = dict(service.labels)
    out.update(
        {
            LABEL_PROJECT: project.name,
            LABEL_SERVICE: service.name,
            LABEL_NUMBER: str(number),
            LABEL_CONFIG_HASH: _digest(fields),
            LABEL_CONFIG_FIELDS: _canonical(fields),
            LABEL_IMAGE: service.image,
        }
    )
    if image is not None:
        out[LABEL_IMAGE_DIGEST] = image.digest
        out[LABEL_IMAGE_TRUST] = _canonical(
            {
                "status": image.status,
                "keys": list(image.keys),
                "signed_at": image.signed_at,
                "policy": image.policy,
            }
        )
    return out


def _container_config(
    service: Service, image: ResolvedImage | None, container_labels: dict[str, str]
) -> dict[str, Any]:
    """The create body's container part: image, labels, environment, process, healthcheck."""
    config: dict[str, Any] = {
        "Image": image.pinned if image is not None else service.image,
        "Labels": container_labels,
        "Env": [f"{k}={v}" for k, v in service.environment if v is not None],
    }
    if service.command is not None:
        config["Cmd"] = list(service.command)
    if service.entrypoint is not None:
        config["Entrypoint"] = list(service.entrypoint) or [""]
    if service.user:
        config["User"] = service.user
    if service.working_dir:
        config["WorkingDir"] = service.working_dir
    if service.hostname:
        config["Hostname"] = service.hostname
    if service.healthcheck is not None:
        config["Healthcheck"] = _healthcheck_body(service.healthcheck)
    return config


def _healthcheck_body(hc: Healthcheck) -> dict[str, Any]:
    health: dict[str, Any] = {"Test": list(hc.test)}
    if hc.interval_ns:
        health["Interval"] = hc.interval_ns
    if hc.timeout_ns:
        health["Timeout"] = hc.timeout_ns
    if hc.retries:
        health["Retries"] = hc.retries
    if hc.start_period_ns:
        health["StartPeriod"] = hc.start_period_ns
    return health


def _host_config(project: Project, service: Service) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The host config's restart policy, port bindings and mounts, and the exposed ports."""
    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in service.ports:
        key = _port_key(port.target, port.protocol)
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": port.host_ip, "HostPort": port.published or ""})
    host: dict[str, Any] = {"RestartPolicy": _restart_policy(service.restart)}
    if bindings:
        host["PortBindings"] = bindings
    binds = [
        f"{m.source}:{m.target}{':ro' if m.read_only else ''}" for m in service.mounts if m.type == "bind"
    ]
    binds += [f"{f.source}:{f.target}:ro" for f in service.files if f.source]
    if binds:
        host["Binds"] = binds
    mounts = [_mount_body(project, m) for m in service.mounts if m.type != "bind"]
    if mounts:
        host["Mounts"] = mounts
    return host, exposed


def _attach(
    project: Project, service: Service, host: dict[str, Any]
) -> tuple[list[tuple[str, tuple[str, ...]]], str | None]:
    """Set the host config's NetworkMode; returns the networks to attach (Docker name,
    aliases) in order and the service whose namespace ``network_mode: service:NAME`` shares."""
    if service.network_mode:
        host["NetworkMode"] = service.network_mode
        if service.network_mode.startswith("service:"):
            return [], service.network_mode.split(":", 1)[1]
        return [], None
    network_names = {n.key: n.name for n in project.networks}
    networks: list[tuple[str, tuple[str, ...]]] = []
    for key, attachment in service.networks:
        aliases = (service.name, *[a for a in attachment.aliases if a != service.name])
        networks.append((network_names[key], aliases))
    if networks:
        host["NetworkMode"] = networks[0][0]
    return networks, None


def _networking_config(networks: list[tuple[str, tuple[str, ...]]], host: dict[str, Any]) -> dict[str, Any]:
    """The endpoint of the first network (the rest are connected after create)."""
    first, aliases = networks[0]
    endpoint: dict[str, Any] = {"Aliases": list(aliases)}
    links = host.pop("Links", None)
    if links:
        # Docker ignores HostConfig.Links on user-defined networks; links live on the endpoint.
        endpoint["Links"] = links
    return {"EndpointsConfig": {first: endpoint}}


def _port_key(target: int, protocol: str) -> str:
    return f"{target}/{protocol}"


def _mount_body(project: Project, mount: Mount) -> dict[str, Any]:
    if mount.type == "volume":
        body: dict[str, Any] = {"Type": "volume", "Target": mount.target, "ReadOnly": mount.read_only}
        if mount.source:
            body["Source"] = project.volume(mount.source).name
        return body
    if mount.type == "tmpfs":
        body = {"Type": "tmpfs", "Target": mount.target, "ReadOnly": mount.read_only}
        if mount.tmpfs_size:
            body["TmpfsOptions"] = {"SizeBytes": mount.tmpfs_size}
        return body
    raise ValueError(f"mount type {mount.type!r} is not sent as a Mount")


def _restart_policy(restart: str) -> dict[str, Any]:
    name, _, count = restart.partition(":")
    policy: dict[str, Any] = {"Name": "" if name == "no" else name}
    if name == "on-failure" and count:
        policy["MaximumRetryCount"] = int(count)
    return policy


def _set_path(root: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    if parts[0] == "HostConfig":
        parts = parts[1:]
    node = root
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def desired_network(project: Project, network: Network) -> DesiredNetwork:
    spec = {
        "driver": network.driver,
        "internal": network.internal,
        "subnets": list(network.subnets),
        "labels": dict(network.labels),
    }
    config_hash = _digest(spec)
    labels = dict(network.labels)
    labels.update({LABEL_PROJECT: project.name, LABEL_NETWORK: network.key, LABEL_CONFIG_HASH: config_hash})
    body: dict[str, Any] = {
        "Name": network.name,
        "Driver": network.driver,
        "Internal": network.internal,
        "Labels": labels,
        "CheckDuplicate": True,
        "Attachable": True,
    }
    if network.subnets:
        body["IPAM"] = {"Driver": "default", "Config": [{"Subnet": s} for s in network.subnets]}
    return DesiredNetwork(
        key=network.key,
        name=network.name,
        external=network.external,
        config_hash=config_hash,
        create_body=body,
    )


def desired_volume(project: Project, volume: Volume) -> DesiredVolume:
    spec = {"driver": volume.driver, "driver_opts": dict(volume.driver_opts), "labels": dict(volume.labels)}
    fields = {k: _digest(v)[:12] for k, v in spec.items() if v}
    config_hash = _digest(spec)
    labels = dict(volume.labels)
    labels.update(
        {
            LABEL_PROJECT: project.name,
            LABEL_VOLUME: volume.key,
            LABEL_CONFIG_HASH: config_hash,
            LABEL_CONFIG_FIELDS: _canonical(fields),
        }
    )
    body = {
        "Name": volume.name,
        "Driver": volume.driver,
        "DriverOpts": dict(volume.driver_opts),
        "Labels": labels,
    }
    return DesiredVolume(
        key=volume.key,
        name=volume.name,
        external=volume.external,
        config_hash=config_hash,
        create_body=body,
        fields=tuple(sorted(fields.items())),
    )


def changed_fields(desired: tuple[tuple[str, str], ...], observed_label: str | None) -> list[str]:
    """Names of the fields whose hashes differ; ['unknown'] when the label is unreadable."""
    try:
        observed = json.loads(observed_label or "")
    except ValueError:
        return ["unknown"]
    if not isinstance(observed, dict):
        return ["unknown"]
    wanted = dict(desired)
    keys = sorted(set(wanted) | set(observed))
    return [k for k in keys if wanted.get(k) != observed.get(k)]
