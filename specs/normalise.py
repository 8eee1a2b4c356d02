"""From a validated Compose document to a ``model.Project``: defaults, names, Compose semantics.

``normalise_project`` turns what ``checks.check_compose`` validated into the frozen model the
runtime consumes: profiles applied, environments and env files merged, short and long
syntaxes made one, configs and secrets read and digested, ``deploy`` folded into replicas,
restart and resources. Settings beyond the core subset land in ``Service.extra`` under their
Compose keys; turning them into Engine API fields is ``gitdock.runtime.desired``'s job.

Its only I/O goes through the load's ``read.Reader`` (env files, config and secret files),
which also collects the problems and warnings found here.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from typing import Any

from gitdock.specs.errors import SpecProblem
from gitdock.specs.interpolate import parse_env_file
from gitdock.specs.model import (
    Dependency,
    Healthcheck,
    Mount,
    Network,
    NetworkAttachment,
    PortMapping,
    Project,
    Service,
    ServiceFile,
    Volume,
)
from gitdock.specs.read import Reader
from gitdock.specs.schema import (
    FileObjectSpec,
    FileRef,
    KeyValues,
    NetworkSpec,
    ServiceSpec,
    VolumeSpec,
    file_ref,
    parse_tmpfs,
    resource_settings,
    service_dependencies,
)
from gitdock.specs.validate import Validated
from gitdock.specs.yamlpos import Document, Path, format_path

_PROJECT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")

# Service keys whose validated value is already normalised: they go to Service.extra as they are.
_PLAIN_EXTRAS = (
    "cap_add",
    "cap_drop",
    "cgroup",
    "cgroup_parent",
    "cpu_period",
    "cpu_quota",
    "cpu_shares",
    "cpuset",
    "device_cgroup_rules",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "extra_hosts",
    "group_add",
    "init",
    "ipc",
    "links",
    "mac_address",
    "mem_swappiness",
    "memswap_limit",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "privileged",
    "read_only",
    "runtime",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_signal",
    "tty",
    "userns_mode",
    "uts",
    "volumes_from",
)


def normalise_project_name(name: str) -> str:
    """Make a project name from a directory name as Compose does: lowercase, only
    ``[a-z0-9_-]``, starting with a letter or digit. May return ""."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def choose_project_name(reader: Reader, given: str | None, top: Validated, doc: Document) -> str:
    """The given name, else ``name:``, else the project directory's; a bad one is a problem."""
    if given is not None:
        if not _PROJECT_NAME_RE.fullmatch(given):
            reader.problems.append(SpecProblem(_bad_name(given)))
        return given
    if top.name:
        if not _PROJECT_NAME_RE.fullmatch(top.name):
            reader.problems.append(SpecProblem(_bad_name(top.name), "name", doc.locate(("name",))))
        return top.name
    name = normalise_project_name(os.path.basename(reader.working_dir))
    if not name:
        reader.problems.append(
            SpecProblem(f"cannot make a project name from the directory {reader.working_dir}; set name:")
        )
    return name


def _bad_name(name: str) -> str:
    return (
        f'"{name}" is not a valid project name: use lowercase letters, digits, "_" and "-", '
        "starting with a letter or digit"
    )


def normalise_project(
    reader: Reader, project: str, top: Validated, doc: Document, profiles: set[str]
) -> Project:
    """The model of the services enabled by ``profiles``, their networks and volumes."""
    enabled = {
        name
        for name, spec in top.services.items()
        if not spec.profiles or "*" in profiles or profiles & set(spec.profiles)
    }
    _check_disabled_references(reader, top, doc, enabled)
    normaliser = _ServiceNormaliser(reader, top, doc)
    services = tuple(normaliser.service(name, top.services[name]) for name in sorted(enabled))
    networks = [_network(project, key, spec, doc) for key, spec in sorted(top.networks.items())]
    uses_default = any(key == "default" for svc in services for key, _ in svc.networks)
    if uses_default and "default" not in top.networks:
        networks.append(Network(key="default", name=f"{project}_default"))
        networks.sort(key=lambda n: n.key)
    return Project(
        name=project,
        services=services,
        networks=tuple(networks),
        volumes=tuple(_volume(project, key, spec, doc) for key, spec in sorted(top.volumes.items())),
        working_dir=reader.working_dir,
        config_files=tuple(reader.paths),
    )


def _check_disabled_references(reader: Reader, top: Validated, doc: Document, enabled: set[str]) -> None:
    """An enabled service must not need a service whose profiles are all inactive."""
    for name in sorted(enabled):
        spec = top.services[name]
        for dep, how in sorted(service_dependencies(spec).items()):
            if dep in top.services and dep not in enabled and how.required:
                profiles = ", ".join(top.services[dep].profiles)
                reader.problems.append(
                    SpecProblem(
                        f'needs service "{dep}", which is not enabled (activate profile {profiles})',
                        format_path(("services", name)),
                        doc.locate(("services", name), prefer_key=True),
                    )
                )


def _network(project: str, key: str, spec: NetworkSpec, doc: Document) -> Network:
    subnets = tuple(c.subnet for c in spec.ipam.config if c.subnet) if spec.ipam else ()
    return Network(
        key=key,
        name=(spec.name or key) if spec.external else (spec.name or f"{project}_{key}"),
        driver=spec.driver or "bridge",
        internal=spec.internal,
        subnets=subnets,
        labels=_labels(spec.labels),
        external=spec.external,
        position=doc.locate(("networks", key), prefer_key=True),
    )


def _volume(project: str, key: str, spec: VolumeSpec, doc: Document) -> Volume:
    return Volume(
        key=key,
        name=(spec.name or key) if spec.external else (spec.name or f"{project}_{key}"),
        driver=spec.driver or "local",
        driver_opts=tuple(sorted(spec.driver_opts.items())),
        labels=_labels(spec.labels),
        external=spec.external,
        position=doc.locate(("volumes", key), prefer_key=True),
    )


class _ServiceNormaliser:
    """Services of one validated document, normalised; reads their files through ``reader``."""

    def __init__(self, reader: Reader, top: Validated, doc: Document) -> None:
        self.reader = reader
        self.top = top
        self.doc = doc

    def service(self, name: str, spec: ServiceSpec) -> Service:
        where: Path = ("services", name)
        extras = self._extras(name, spec)  # first: its warnings come before the others
        return Service(
            name=name,
            image=spec.image,
            command=spec.command,
            entrypoint=spec.entrypoint,
            environment=self._environment(spec, where),
            labels=_labels(spec.labels),
            ports=_ports(spec),
            mounts=self._mounts(spec),
            networks=_networks(spec),
            network_mode=spec.network_mode,
            restart=self._restart(name, spec),
            depends_on=tuple(
                (dep, Dependency(condition=d.condition, required=d.required))
                for dep, d in sorted(service_dependencies(spec).items())
            ),
            healthcheck=_healthcheck(spec),
            user=spec.user,
            working_dir=spec.working_dir,
            hostname=spec.hostname,
            container_name=spec.container_name,
            replicas=_replicas(spec),
            position=self.doc.locate(where, prefer_key=True),
            extra=tuple(sorted(extras.items())),
            files=self._files(name, spec),
            stop_grace_period=None if spec.stop_grace_period is None else spec.stop_grace_period // 10**9,
            platform=spec.platform,
            pull_policy=spec.pull_policy,
            profiles=tuple(spec.profiles),
        )

    def _restart(self, name: str, spec: ServiceSpec) -> str:
        """``restart``, unless ``deploy.restart_policy`` is set: that wins, as in Compose."""
        policy = spec.deploy.restart_policy if spec.deploy else None
        if policy is None:
            return spec.restart
        if policy.delay is not None or policy.window is not None:
            self.reader.warn(
                f"services.{name}.deploy.restart_policy: delay and window have no effect on a "
                "plain Docker host (Swarm only)"
            )
        if policy.condition == "none":
            return "no"
        if policy.condition == "on-failure":
            return "on-failure" if policy.max_attempts is None else f"on-failure:{policy.max_attempts}"
        return "always"

    def _extras(self, name: str, spec: ServiceSpec) -> dict[str, Any]:
        """The further settings, by Compose key; unset and empty ones are left out."""
        extras: dict[str, Any] = {key: getattr(spec, key) for key in _PLAIN_EXTRAS}
        extras["annotations"] = dict(_labels(spec.annotations))
        extras["sysctls"] = dict(_labels(spec.sysctls))
        extras["storage_opt"] = dict(sorted(spec.storage_opt.items()))
        extras["devices"] = [
            {"source": d.source, "target": d.target or d.source, "permissions": d.permissions}
            for d in spec.devices
        ]
        extras["expose"] = _expose(spec.expose)
        extras["ulimits"] = {
            k: {"soft": v, "hard": v} if isinstance(v, int) else {"soft": v.soft, "hard": v.hard}
            for k, v in sorted(spec.ulimits.items())
        }
        if spec.logging is not None:
            options = {k: v or "" for k, v in sorted((spec.logging.options or {}).items())}
            extras["logging"] = {"driver": spec.logging.driver or "json-file", "options": options}
        extras.update(self._resources(name, spec))
        return {k: v for k, v in extras.items() if v is not None and v != [] and v != {}}

    def _resources(self, name: str, spec: ServiceSpec) -> dict[str, Any]:
        """Resource limits by the key that set them: the service key wins over deploy.resources."""
        chosen: dict[str, Any] = {}
        for key, value, deploy_path, deploy_value in resource_settings(spec):
            if value is not None:
                chosen[key] = value
            elif deploy_value is not None:
                chosen[f"deploy.resources.{deploy_path}"] = deploy_value
        reservations = spec.deploy.resources.reservations if spec.deploy and spec.deploy.resources else None
        if reservations is not None and reservations.cpus is not None:
            self.reader.warn(
                f"services.{name}.deploy.resources.reservations.cpus has no effect on a plain Docker host"
            )
        return chosen

    def _files(self, name: str, spec: ServiceSpec) -> tuple[ServiceFile, ...]:
        """The service's configs and secrets, with their content read now."""
        files: list[ServiceFile] = []
        for kind in ("configs", "secrets"):
            defined: Mapping[str, FileObjectSpec] = (
                self.top.configs if kind == "configs" else self.top.secrets
            )
            for i, entry in enumerate(getattr(spec, kind)):
                source, target = file_ref(kind, entry)
                obj = defined.get(source)
                if obj is None:
                    continue  # an undefined reference, reported by check_semantics
                host_path = self.reader.host_path(obj.file) if obj.file is not None else ""
                content = self._file_content(kind, source, obj, host_path)
                if content is None:
                    continue
                ref = entry if isinstance(entry, FileRef) else None
                if host_path and ref is not None and (ref.mode is not None or ref.uid or ref.gid):
                    self.reader.warn(
                        f"services.{name}.{kind}[{i}]: uid, gid and mode have no effect on a {kind[:-1]} "
                        "read from a file (it is bind-mounted, as in Compose)"
                    )
                files.append(_service_file(kind, source, target, content, host_path, ref))
        return tuple(files)

    def _file_content(self, kind: str, source: str, obj: FileObjectSpec, host_path: str) -> bytes | None:
        """A config's or secret's bytes: from its file, its variable or its inline content."""
        where: Path = (kind, source)
        if host_path:
            return self.reader.read_bytes(
                host_path,
                f"{kind[:-1]} file",
                where=(*where, "file"),
                position=self.doc.locate((*where, "file")),
            )
        if obj.environment is not None:
            value = self.reader.env.get(obj.environment)
            if value is None:
                self.reader.problems.append(
                    SpecProblem(
                        f"the variable {obj.environment} is not set",
                        format_path((*where, "environment")),
                        self.doc.locate((*where, "environment")),
                    )
                )
            return (value or "").encode()
        return (getattr(obj, "content", None) or "").encode()

    def _environment(self, spec: ServiceSpec, where: Path) -> tuple[tuple[str, str | None], ...]:
        env: dict[str, str | None] = {}
        for field_path, rel, required in _env_files(spec, where):
            env.update(self._env_file(field_path, rel, required))
        # environment: wins over env_file; a name without value is taken from the project
        # environment, and stays None (unset in the container) when it is not there either.
        for key, value in _pairs(spec.environment, default=None):
            env[key] = value if value is not None else self.reader.env.get(key)
        return tuple(sorted(env.items()))

    def _env_file(self, field_path: Path, rel: str, required: bool) -> dict[str, str]:
        path = self.reader.host_path(rel)
        if not required and not os.path.exists(path):
            return {}
        text = self.reader.read_text(path, "env file", where=field_path, position=self.doc.locate(field_path))
        if text is None:
            return {}
        parsed = parse_env_file(text, path, self.reader.env)
        self.reader.problems += parsed.problems
        for var in parsed.missing:
            self.reader.warn_unset(var, f"{path}: ")
        return parsed.values

    def _mounts(self, spec: ServiceSpec) -> tuple[Mount, ...]:
        mounts: list[Mount] = []
        for vol in spec.volumes:
            if vol.type == "bind":
                create = vol.bind.create_host_path if vol.bind is not None else True
                source = self.reader.host_path(vol.source)
                mounts.append(Mount("bind", vol.target, source, vol.read_only, None, create))
            elif vol.type == "tmpfs":
                size = vol.tmpfs.size if vol.tmpfs is not None else None
                mounts.append(Mount("tmpfs", vol.target, "", vol.read_only, size))
            else:
                mounts.append(Mount("volume", vol.target, vol.source, vol.read_only))
        tmpfs = [spec.tmpfs] if isinstance(spec.tmpfs, str) else spec.tmpfs or []
        for entry in tmpfs:
            target, size = parse_tmpfs(entry)
            mounts.append(Mount("tmpfs", target, tmpfs_size=size))
        return tuple(mounts)


def _replicas(spec: ServiceSpec) -> int:
    if spec.deploy is not None and spec.deploy.replicas is not None:
        return spec.deploy.replicas
    return spec.scale if spec.scale is not None else 1


def _expose(entries: list[str]) -> list[str]:
    """expose entries as one ``PORT/PROTOCOL`` per port (ranges expanded, tcp by default)."""
    out: list[str] = []
    for entry in entries:
        port, _, protocol = entry.partition("/")
        low, _, high = port.partition("-")
        out += [f"{number}/{protocol or 'tcp'}" for number in range(int(low), int(high or low) + 1)]
    return out


def _env_files(spec: ServiceSpec, where: Path) -> list[tuple[Path, str, bool]]:
    """(field path, path as written, required) of each env file, in order."""
    if isinstance(spec.env_file, str):
        return [((*where, "env_file"), spec.env_file, True)]
    entries: list[tuple[Path, str, bool]] = []
    for i, entry in enumerate(spec.env_file or []):
        path, required = (entry, True) if isinstance(entry, str) else (entry.path, entry.required)
        entries.append(((*where, "env_file", i), path, required))
    return entries


def _service_file(
    kind: str, source: str, target: str, content: bytes, host_path: str, ref: FileRef | None
) -> ServiceFile:
    return ServiceFile(
        kind=kind,
        name=source,
        target=target,
        digest=hashlib.sha256(content).hexdigest(),
        content=None if host_path else content,
        source=host_path,
        mode=ref.mode if ref is not None and ref.mode is not None else 0o444,
        uid=(ref.uid if ref is not None and ref.uid else "0"),
        gid=(ref.gid if ref is not None and ref.gid else "0"),
    )


def _pairs(values: KeyValues | None, default: str | None) -> list[tuple[str, str | None]]:
    """environment/labels as (key, value) pairs; ``KEY`` alone and null values give ``default``."""
    if values is None:
        return []
    if isinstance(values, dict):
        return [(k, default if v is None else v) for k, v in values.items()]
    out: list[tuple[str, str | None]] = []
    for item in values:
        key, sep, value = item.partition("=")
        out.append((key, value if sep else default))
    return out


def _labels(values: KeyValues | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v or "") for k, v in _pairs(values, default="")))


def _ports(spec: ServiceSpec) -> tuple[PortMapping, ...]:
    ports: list[PortMapping] = []
    for entry in spec.ports:
        if isinstance(entry, tuple):
            ports.extend(entry)
        else:
            ports.append(PortMapping(entry.target, entry.published, entry.host_ip, entry.protocol))
    return tuple(ports)


def _networks(spec: ServiceSpec) -> tuple[tuple[str, NetworkAttachment], ...]:
    if spec.network_mode is not None:
        return ()
    if spec.networks is None:
        return (("default", NetworkAttachment()),)
    if isinstance(spec.networks, list):
        return tuple((key, NetworkAttachment()) for key in sorted(set(spec.networks)))
    return tuple(
        (key, NetworkAttachment(tuple(net.aliases), net.ipv4_address) if net else NetworkAttachment())
        for key, net in sorted(spec.networks.items())
    )


def _healthcheck(spec: ServiceSpec) -> Healthcheck | None:
    hc = spec.healthcheck
    if hc is None:
        return None
    if hc.disable:
        return Healthcheck(test=("NONE",))
    if isinstance(hc.test, str):
        test: tuple[str, ...] = ("CMD-SHELL", hc.test)
    else:
        test = tuple(hc.test or ())  # () inherits the image's test
    return Healthcheck(
        test=test,
        interval_ns=hc.interval,
        timeout_ns=hc.timeout,
        retries=hc.retries,
        start_period_ns=hc.start_period,
    )
