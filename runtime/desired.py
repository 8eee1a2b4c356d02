"""From a Project to the Docker objects it asks for: names, labels, config hashes, API bodies.

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
from gitdock.specs.model import Mount, Network, Project, Service, ServiceFile, Volume

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
        "extra_keys",  # names for the extra fragments, not settings
        "stop_grace_period",  # hashed through its extra fragment (StopTimeout)
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


def service_field_hashes(service: Service, network_names: dict[str, str]) -> dict[str, str]:
    """A short hash per Compose field of the service, for 'config changed: a, b' causes."""
    fields: dict[str, str] = {}
    for f in dataclasses.fields(service):
        if f.name in _UNHASHED_FIELDS:
            continue
        value = _plain(getattr(service, f.name))
        if f.name == "networks":
            # The Docker names matter too: renaming a network must recreate its containers.
            value = [[network_names.get(k, k), v] for k, v in value]
        if f.name == "extra":
            # Grouped under the Compose key the user wrote (cap_add), not the API path.
            keys = dict(service.extra_keys)
            for path, extra_value in value:
                top = keys.get(path) or str(path).split(".", 1)[0]
                fields[top] = _digest([fields.get(top, ""), path, extra_value])[:12]
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


def _port_key(target: int, protocol: str) -> str:
    return f"{target}/{protocol}"


def _nanos(value: int | None) -> int:
    return value or 0


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


def desired_container(
    project: Project, service: Service, number: int, image: ResolvedImage | None = None
) -> DesiredContainer:
    """Everything needed to create container ``number`` of ``service``. Pure.

    With a resolved ``image`` the container is created from ``<repository>@<digest>``, so
    nothing can change between verification and pull, and it carries the lock record.
    """
    network_names = {n.key: n.name for n in project.networks}
    fields = service_field_hashes(service, network_names)
    config_hash = _digest(fields)
    name = container_name(project.name, service, number)

    labels = dict(service.labels)
    labels.update(
        {
            LABEL_PROJECT: project.name,
            LABEL_SERVICE: service.name,
            LABEL_NUMBER: str(number),
            LABEL_CONFIG_HASH: config_hash,
            LABEL_CONFIG_FIELDS: _canonical(fields),
            LABEL_IMAGE: service.image,
        }
    )
    if image is not None:
        labels[LABEL_IMAGE_DIGEST] = image.digest
        labels[LABEL_IMAGE_TRUST] = _canonical(
            {
                "status": image.status,
                "keys": list(image.keys),
                "signed_at": image.signed_at,
                "policy": image.policy,
            }
        )
    config: dict[str, Any] = {
        "Image": image.pinned if image is not None else service.image,
        "Labels": labels,
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
        hc = service.healthcheck
        health: dict[str, Any] = {"Test": list(hc.test)}
        if hc.interval_ns:
            health["Interval"] = hc.interval_ns
        if hc.timeout_ns:
            health["Timeout"] = hc.timeout_ns
        if hc.retries:
            health["Retries"] = hc.retries
        if hc.start_period_ns:
            health["StartPeriod"] = hc.start_period_ns
        config["Healthcheck"] = health

    exposed: dict[str, dict[str, Any]] = {}
    bindings: dict[str, list[dict[str, str]]] = {}
    for port in service.ports:
        key = _port_key(port.target, port.protocol)
        exposed[key] = {}
        bindings.setdefault(key, []).append({"HostIp": port.host_ip, "HostPort": port.published or ""})
    if exposed:
        config["ExposedPorts"] = exposed

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

    networks: list[tuple[str, tuple[str, ...]]] = []
    mode_service: str | None = None
    if service.network_mode:
        if service.network_mode.startswith("service:"):
            mode_service = service.network_mode.split(":", 1)[1]
        host["NetworkMode"] = service.network_mode
    else:
        for key, attachment in service.networks:
            aliases = (service.name, *[a for a in attachment.aliases if a != service.name])
            networks.append((network_names[key], aliases))
        if networks:
            host["NetworkMode"] = networks[0][0]

    for path, value in service.extra:
        _set_path(config if not path.startswith("HostConfig.") else host, path, value)

    config["HostConfig"] = host
    links = host.pop("Links", None) if networks else None
    if networks:
        first, aliases = networks[0]
        endpoint: dict[str, Any] = {"Aliases": list(aliases)}
        if links:
            # Docker ignores HostConfig.Links on user-defined networks; links live on the endpoint.
            endpoint["Links"] = links
        config["NetworkingConfig"] = {"EndpointsConfig": {first: endpoint}}

    return DesiredContainer(
        project=project.name,
        service=service.name,
        number=number,
        name=name,
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
