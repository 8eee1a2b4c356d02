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
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gitdock.runtime import labels
from gitdock.runtime.build import dockerfile_in_context
from gitdock.runtime.labels import (
    LABEL_BUILD_DIGEST,
    LABEL_BUILD_REVISION,
    LABEL_CONFIG_FIELDS,
    LABEL_CONFIG_HASH,
    LABEL_IMAGE,
    LABEL_IMAGE_DIGEST,
    LABEL_IMAGE_SOURCE,
    LABEL_IMAGE_TRUST,
    LABEL_NETWORK,
    LABEL_NUMBER,
    LABEL_PROJECT,
    LABEL_SERVICE,
    LABEL_VOLUME,
)
from gitdock.specs.model import (
    OMIT_DEFAULT,
    Build,
    Healthcheck,
    Mount,
    Network,
    NetworkAttachment,
    Project,
    Service,
    ServiceFile,
    ServiceHook,
    Volume,
)

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
        "update_config",  # how to replace its containers, not what they are
        "build",  # how the image is made: the content tag in ``image`` carries it
        "secret_env",  # says how to record the environment, which is hashed already
    }
)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _digest(value: Any) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()


_SCALARS = frozenset({str, int, float, bool, type(None)})


_FieldList = tuple[tuple[str, bool, Any], ...] | None
_FIELD_LISTS: dict[type, _FieldList] = {}


def _hashed_fields(cls: type) -> _FieldList:
    """(name, omitted at its default, default) of a dataclass's fields but ``position``; None
    for any other class. Cached: a no-op plan of N services asks this ~N x 30 times."""
    if cls not in _FIELD_LISTS:
        _FIELD_LISTS[cls] = (
            tuple(
                (f.name, bool(f.metadata.get(OMIT_DEFAULT)), f.default)
                for f in dataclasses.fields(cls)
                if f.name != "position"
            )
            if dataclasses.is_dataclass(cls)
            else None
        )
    return _FIELD_LISTS[cls]


def _plain(value: Any) -> Any:
    """Dataclasses and enums into JSON-able values, keeping tuples as lists."""
    if type(value) in _SCALARS:  # the common case first; exact types, so no str Enum here
        return value
    fields = None if isinstance(value, type) else _hashed_fields(type(value))
    if fields is not None:
        plain = {}
        for name, omit_default, default in fields:
            field_value = getattr(value, name)
            # A field added after hashes were in use (``model.when_set``) is left out at its
            # default, so adding it changed no existing hash.
            if not (omit_default and field_value == default):
                plain[name] = _plain(field_value)
        return plain
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
    # Environment names whose values came from a SOPS file: recorded only as digests.
    secret_env: frozenset[str] = frozenset()
    # Docker network name -> its endpoint config (aliases, addresses, driver options).
    endpoints: tuple[tuple[str, dict[str, Any]], ...] = ()
    # Lifecycle hooks, run by runtime.hooks after a start and before gitdock stops it.
    post_start: tuple[ServiceHook, ...] = ()
    pre_stop: tuple[ServiceHook, ...] = ()

    def endpoint_config(self, network: str) -> dict[str, Any]:
        """The endpoint config to connect ``network`` with (its aliases at least)."""
        found = dict(self.endpoints).get(network)
        if found is not None:
            return found
        aliases = next((a for n, a in self.networks if n == network), ())
        return {"Aliases": list(aliases)}

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
    "mac_address": "MacAddress",
    "mem_swappiness": "HostConfig.MemorySwappiness",
    "memswap_limit": "HostConfig.MemorySwap",
    "oom_kill_disable": "HostConfig.OomKillDisable",
    "oom_score_adj": "HostConfig.OomScoreAdj",
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
    # Issue 11.
    "cpu_count": "HostConfig.CpuCount",
    "cpu_percent": "HostConfig.CpuPercent",
    "cpu_rt_period": "HostConfig.CpuRealtimePeriod",
    "cpu_rt_runtime": "HostConfig.CpuRealtimeRuntime",
    "isolation": "HostConfig.Isolation",
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


def _external_links(project: Project, links: list[str]) -> list[str]:
    """external_links name containers: ``NAME[:ALIAS]``, the alias defaulting to the name."""
    return [f"{name}:{alias or name}" for name, _, alias in (link.partition(":") for link in links)]


def _shared_mode(project: Project, mode: str) -> str:
    """``ipc``/``pid`` of ``service:NAME``: that service's first container, as Compose does."""
    if mode.startswith("service:"):
        return f"container:{_first_container(project, mode.removeprefix('service:'))}"
    return mode


def _device_requests(project: Project, devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "Driver": d["driver"],
            "Count": d["count"],
            "DeviceIDs": d["device_ids"] or None,
            "Capabilities": [d["capabilities"]],
            "Options": d["options"] or None,
        }
        for d in devices
    ]


_BLKIO_PATHS = {
    "weight": "HostConfig.BlkioWeight",
    "weight_device": "HostConfig.BlkioWeightDevice",
    "device_read_bps": "HostConfig.BlkioDeviceReadBps",
    "device_read_iops": "HostConfig.BlkioDeviceReadIOps",
    "device_write_bps": "HostConfig.BlkioDeviceWriteBps",
    "device_write_iops": "HostConfig.BlkioDeviceWriteIOps",
}


def _blkio_settings(key: str, blkio: dict[str, Any]) -> list[tuple[str, str, Any]]:
    out: list[tuple[str, str, Any]] = []
    for name, value in blkio.items():
        if name == "weight":
            out.append((key, _BLKIO_PATHS[name], value))
        elif name == "weight_device":
            out.append((key, _BLKIO_PATHS[name], [{"Path": d["path"], "Weight": d["weight"]} for d in value]))
        else:
            out.append((key, _BLKIO_PATHS[name], [{"Path": d["path"], "Rate": d["rate"]} for d in value]))
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
    "ipc": ("HostConfig.IpcMode", _shared_mode),
    "pid": ("HostConfig.PidMode", _shared_mode),
    "external_links": ("HostConfig.Links", _external_links),
    "gpus": ("HostConfig.DeviceRequests", _device_requests),
    "deploy.resources.reservations.devices": ("HostConfig.DeviceRequests", _device_requests),
}


def engine_settings(project: Project, service: Service) -> list[tuple[str, str, Any]]:
    """(Compose key, dotted Engine API path, value) of the service's further settings
    (``Service.extra`` and stop_grace_period), ordered by path. Pure."""
    out: list[tuple[str, str, Any]] = []
    for key, value in service.extra:
        if key == "expose":
            out += [(key, f"ExposedPorts.{port}", {}) for port in value]
        elif key == "blkio_config":
            out += _blkio_settings(key, value)
        elif key in _ENGINE_SHAPES:
            path, shape = _ENGINE_SHAPES[key]
            out.append((key, path, shape(project, value)))
        else:
            out.append((key, _ENGINE_PATHS[key], value))
    if service.stop_grace_period is not None:
        out.append(("stop_grace_period", "StopTimeout", service.stop_grace_period))
    return sorted(out, key=lambda setting: setting[1])


# --- the container ---------------------------------------------------------------------


# The planner and the applied record ask desired_container the same questions of one project
# in one command: 2 x N answers of ~0.1 ms, most of a no-op apply's own time at N = 1,000. The
# answers about the last project asked of are kept, by identity (the model is frozen, and the
# memo holds what it keys on, so an id is never reused while its answer is kept).
_memo: tuple[Project | None, dict[tuple[int, int, int], tuple[Any, Any, DesiredContainer]]] = (None, {})


def desired_container(
    project: Project, service: Service, number: int, image: ResolvedImage | None = None
) -> DesiredContainer:
    """Everything needed to create container ``number`` of ``service``. Pure (memoised).

    With a resolved ``image`` the container is created from ``<repository>@<digest>``, so
    nothing can change between verification and pull, and it carries the lock record.
    """
    global _memo
    memo_project, answers = _memo
    if memo_project is not project:
        answers = {}
        _memo = (project, answers)  # one tuple: threads asking of other projects only miss
    key = (id(service), number, id(image))
    kept = answers.get(key)
    if kept is not None and kept[0] is service and kept[1] is image:
        return kept[2]
    answer = _desired_container(project, service, number, image)
    answers[key] = (service, image, answer)
    return answer


def _desired_container(
    project: Project, service: Service, number: int, image: ResolvedImage | None
) -> DesiredContainer:
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
    endpoints = _endpoints(project, service, networks)
    if networks:
        config["NetworkingConfig"] = _networking_config(networks, endpoints, host)
        first_mac = endpoints[networks[0][0]].get("MacAddress")
        if first_mac and "MacAddress" not in config:
            config["MacAddress"] = first_mac  # API 1.41 sets the first endpoint's MAC here
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
        secret_env=frozenset(service.secret_env),
        endpoints=tuple(endpoints.items()),
        post_start=service.post_start,
        pre_stop=service.pre_stop,
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
    if service.build is not None:
        out[LABEL_IMAGE_SOURCE] = labels.image_source(service.build.revision)
    if image is not None:
        out[LABEL_IMAGE_DIGEST] = image.digest
        out[LABEL_IMAGE_TRUST] = _canonical(
            {
                "status": image.status,
                "keys": list(image.keys),
                "signed_at": image.signed_at,
                "policy": image.policy,
                # A multi-arch image: the platform manifest this host runs, beside the index digest.
                **({"platform_digest": image.platform_digest} if image.platform_digest else {}),
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
    binds = [_bind(m) for m in service.mounts if m.type == "bind" and not m.non_recursive]
    binds += [f"{f.source}:{f.target}:ro" for f in service.files if f.source]
    if binds:
        host["Binds"] = binds
    mounts = [_mount_body(project, m) for m in service.mounts if m.type != "bind" or m.non_recursive]
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


def _endpoints(
    project: Project, service: Service, networks: list[tuple[str, tuple[str, ...]]]
) -> dict[str, dict[str, Any]]:
    """Docker network name -> endpoint config: aliases, then what the attachment sets."""
    network_names = {n.key: n.name for n in project.networks}
    attachments = {network_names[key]: attachment for key, attachment in service.networks}
    return {name: _endpoint(aliases, attachments[name]) for name, aliases in networks}


def _endpoint(aliases: tuple[str, ...], attachment: NetworkAttachment) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"Aliases": list(aliases)}
    ipam: dict[str, Any] = {}
    if attachment.ipv4_address:
        ipam["IPv4Address"] = attachment.ipv4_address
    if attachment.ipv6_address:
        ipam["IPv6Address"] = attachment.ipv6_address
    if attachment.link_local_ips:
        ipam["LinkLocalIPs"] = list(attachment.link_local_ips)
    if ipam:
        endpoint["IPAMConfig"] = ipam
    if attachment.driver_opts:
        endpoint["DriverOpts"] = dict(attachment.driver_opts)
    if attachment.mac_address:
        endpoint["MacAddress"] = attachment.mac_address  # API 1.44+; 1.41 reads the container's
    return endpoint


def _networking_config(
    networks: list[tuple[str, tuple[str, ...]]], endpoints: dict[str, dict[str, Any]], host: dict[str, Any]
) -> dict[str, Any]:
    """The endpoint of the first network (the rest are connected after create). Links go on
    every network's endpoint, as Compose connects them (``links`` on each network)."""
    first, _aliases = networks[0]
    links = host.pop("Links", None)
    if links:
        # Docker ignores HostConfig.Links on user-defined networks; links live on the endpoint.
        for endpoint in endpoints.values():
            endpoint["Links"] = list(links)
    return {"EndpointsConfig": {first: dict(endpoints[first])}}


def _port_key(target: int, protocol: str) -> str:
    return f"{target}/{protocol}"


def _bind(mount: Mount) -> str:
    """A bind as ``Binds`` takes it: ``SOURCE:TARGET[:ro,PROPAGATION,z]``."""
    options = [o for o in ("ro" if mount.read_only else None, mount.propagation, mount.selinux) if o]
    return f"{mount.source}:{mount.target}" + (f":{','.join(options)}" if options else "")


def _mount_body(project: Project, mount: Mount) -> dict[str, Any]:
    if mount.type == "volume":
        body: dict[str, Any] = {"Type": "volume", "Target": mount.target, "ReadOnly": mount.read_only}
        if mount.source:
            body["Source"] = project.volume(mount.source).name
        volume_options: dict[str, Any] = {}
        if mount.nocopy:
            volume_options["NoCopy"] = True
        if mount.volume_labels:
            volume_options["Labels"] = dict(mount.volume_labels)
        if volume_options:
            body["VolumeOptions"] = volume_options
        return body
    if mount.type == "tmpfs":
        body = {"Type": "tmpfs", "Target": mount.target, "ReadOnly": mount.read_only}
        tmpfs: dict[str, Any] = {}
        if mount.tmpfs_size:
            tmpfs["SizeBytes"] = mount.tmpfs_size
        if mount.tmpfs_mode is not None:
            tmpfs["Mode"] = mount.tmpfs_mode
        if tmpfs:
            body["TmpfsOptions"] = tmpfs
        return body
    if mount.type == "bind":  # sent as a Mount only for what Binds cannot say (non-recursive)
        bind: dict[str, Any] = {"NonRecursive": True}
        if mount.propagation:
            bind["Propagation"] = mount.propagation
        return {
            "Type": "bind",
            "Source": mount.source,
            "Target": mount.target,
            "ReadOnly": mount.read_only,
            "BindOptions": bind,
        }
    if mount.type == "image":  # Engine API 1.48: the image's files, read-only
        body = {"Type": "image", "Source": mount.source, "Target": mount.target, "ReadOnly": mount.read_only}
        if mount.image_subpath:
            body["ImageOptions"] = {"Subpath": mount.image_subpath}
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
    if isinstance(node.get(parts[-1]), list) and isinstance(value, list):
        node[parts[-1]] = [*node[parts[-1]], *value]  # links and external_links, gpus and devices
    else:
        node[parts[-1]] = value


def _network_extras(network: Network) -> dict[str, Any]:
    """Issue 11's network settings, as hashed: only those set, so older hashes stay."""
    extras: dict[str, Any] = {
        "driver_opts": dict(network.driver_opts),
        "enable_ipv6": network.enable_ipv6,
        "ipam_driver": network.ipam_driver,
        "ipam_options": dict(network.ipam_options),
        "pools": _plain(network.pools),
    }
    return {k: v for k, v in extras.items() if v not in (None, False, {}, [])}


def _ipam_body(network: Network) -> dict[str, Any] | None:
    if not (network.subnets or network.ipam_driver or network.ipam_options or network.pools):
        return None
    ipam: dict[str, Any] = {"Driver": network.ipam_driver or "default"}
    if network.pools:
        ipam["Config"] = [_pool_body(p) for p in network.pools]
    else:
        ipam["Config"] = [{"Subnet": s} for s in network.subnets]
    if network.ipam_options:
        ipam["Options"] = dict(network.ipam_options)
    return ipam


def _pool_body(pool: Any) -> dict[str, Any]:
    body = {"Subnet": pool.subnet, "IPRange": pool.ip_range, "Gateway": pool.gateway}
    out: dict[str, Any] = {k: v for k, v in body.items() if v}
    if pool.aux_addresses:
        out["AuxiliaryAddresses"] = dict(pool.aux_addresses)
    return out


def desired_network(project: Project, network: Network) -> DesiredNetwork:
    spec = {
        "driver": network.driver,
        "internal": network.internal,
        "subnets": list(network.subnets),
        "labels": dict(network.labels),
        **_network_extras(network),
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
    if (ipam := _ipam_body(network)) is not None:
        body["IPAM"] = ipam
    if network.driver_opts:
        body["Options"] = dict(network.driver_opts)
    if network.enable_ipv6:
        body["EnableIPv6"] = True
    return DesiredNetwork(
        key=network.key,
        name=network.name,
        external=network.external,
        config_hash=config_hash,
        create_body=body,
    )


@functools.lru_cache(maxsize=256)
def _volume_hashes(
    driver: str, driver_opts: tuple[tuple[str, str], ...], volume_labels: tuple[tuple[str, str], ...]
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The config hash and field hashes of a volume's settings; memoised, as most of a
    project's volumes share them (a plan of 500 default volumes hashes them once)."""
    spec = {"driver": driver, "driver_opts": dict(driver_opts), "labels": dict(volume_labels)}
    fields = {k: _digest(v)[:12] for k, v in spec.items() if v}
    return _digest(spec), tuple(fields.items())


def desired_volume(project: Project, volume: Volume) -> DesiredVolume:
    config_hash, field_items = _volume_hashes(volume.driver, volume.driver_opts, volume.labels)
    fields = dict(field_items)
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


# --- images built from the revision ----------------------------------------------------


@dataclass(frozen=True)
class DesiredBuild:
    """One image to build: the service's build (its context) and the ``POST /build`` query."""

    service: str
    image: str  # the content tag: <project>-<service>:<digest prefix>
    build: Build
    params: dict[str, str | list[str]]

    @property
    def resource(self) -> str:
        return labels.build_resource(self.service)


def desired_build(project: Project, service: Service) -> DesiredBuild:
    """The classic builder's query for ``service``'s bound build (``runtime.build``). Pure."""
    build = service.build
    assert build is not None, "only a service with build: is built"
    image_labels = dict(build.labels)
    image_labels.update(
        {LABEL_PROJECT: project.name, LABEL_SERVICE: service.name, LABEL_BUILD_DIGEST: build.digest}
    )
    image_labels[LABEL_IMAGE_SOURCE] = labels.image_source(build.revision)
    if build.revision:
        image_labels[LABEL_BUILD_REVISION] = build.revision
    params: dict[str, str | list[str]] = {
        "t": [service.image, *build.tags],
        "dockerfile": dockerfile_in_context(build),
        "labels": _canonical(image_labels),
        "rm": "1",
        "forcerm": "1",  # a failed step leaves no intermediate container behind
    }
    optional: dict[str, str | list[str] | None] = {
        "buildargs": _canonical(dict(build.args)) if build.args else None,
        "target": build.target,
        "networkmode": build.network,
        "extrahosts": list(build.extra_hosts) or None,
        "shmsize": str(build.shm_size) if build.shm_size else None,
        "nocache": "1" if build.no_cache else None,
        "pull": "1" if build.pull else None,
        "cachefrom": _canonical(list(build.cache_from)) if build.cache_from else None,
        "platform": build.platform,
        "remote": build.remote,  # the Engine fetches the context (a git or tarball URL)
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return DesiredBuild(service.name, service.image, build, params)


# --- the memo's answers, to keep between commands (runtime.desired_cache) -------------------


def memo_answers(project: Project) -> dict[tuple[str, int], DesiredContainer]:
    """The memo's answers for ``project`` (unverified images only), by (service, number)."""
    memo_project, answers = _memo
    if memo_project is not project:
        return {}
    return {(a[0].name, key[1]): a[2] for key, a in answers.items() if a[1] is None}


def preset_answers(project: Project, kept: dict[tuple[str, int], DesiredContainer]) -> int:
    """Make ``kept`` (``memo_answers`` of an equal project) the memo's answers for ``project``;
    returns how many were taken (those of services the project has)."""
    global _memo
    services = {svc.name: svc for svc in project.services}
    answers: dict[tuple[int, int, int], tuple[Any, Any, DesiredContainer]] = {}
    for (name, number), answer in kept.items():
        svc = services.get(name)
        if svc is not None and isinstance(answer, DesiredContainer) and answer.service == name:
            answers[(id(svc), number, id(None))] = (svc, None, answer)
    _memo = (project, answers)
    return len(answers)
