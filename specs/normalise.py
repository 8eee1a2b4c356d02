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
from gitdock.specs.model import (
    Build,
    Dependency,
    FailureAction,
    Healthcheck,
    Mount,
    Network,
    NetworkAttachment,
    PortMapping,
    Project,
    Service,
    ServiceFile,
    ServiceHook,
    UpdateConfig,
    UpdateOrder,
    Volume,
)
from gitdock.specs.read import Reader
from gitdock.specs.schema import (
    BUILDKIT_BUILD_KEYS,
    BuildSpec,
    FileObjectSpec,
    FileRef,
    KeyValues,
    NetworkSpec,
    ServiceSpec,
    VolumeSpec,
    external_name,
    file_ref,
    parse_tmpfs,
    resource_settings,
    service_dependencies,
)
from gitdock.specs.schema import (
    ServiceHook as ServiceHookSpec,
)
from gitdock.specs.settings import (
    API_SOCKET,
    further_settings,
    mount_options,
    network_attachment,
    network_options,
    provider_warning,
    service_warnings,
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
    """The model of the services enabled by ``profiles``, their networks and volumes.

    A ``provider`` service is run by a Compose plugin: it is left out, with a warning."""
    for warning in top.warnings:
        reader.warn(warning)
    for name, spec in sorted(top.services.items()):
        if (skipped := provider_warning(name, spec)) is not None:
            reader.warn(skipped)
    enabled = {
        name
        for name, spec in top.services.items()
        if (not spec.profiles or "*" in profiles or profiles & set(spec.profiles)) and spec.provider is None
    }
    _check_disabled_references(reader, top, doc, enabled)
    normaliser = _ServiceNormaliser(reader, top, doc, project)
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
            if dep in top.services and dep not in enabled and how.required and not top.services[dep].provider:
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
    name = external_name(spec.external, spec.name)
    return Network(
        key=key,
        name=(name or key) if spec.external else (name or f"{project}_{key}"),
        driver=spec.driver or "bridge",
        internal=spec.internal,
        subnets=subnets,
        labels=_labels(spec.labels),
        external=bool(spec.external),
        position=doc.locate(("networks", key), prefer_key=True),
        **network_options(spec),
    )


def _volume(project: str, key: str, spec: VolumeSpec, doc: Document) -> Volume:
    name = external_name(spec.external, spec.name)
    return Volume(
        key=key,
        name=(name or key) if spec.external else (name or f"{project}_{key}"),
        driver=spec.driver or "local",
        driver_opts=tuple(sorted(spec.driver_opts.items())),
        labels=_labels(spec.labels),
        external=bool(spec.external),
        position=doc.locate(("volumes", key), prefer_key=True),
    )


class _ServiceNormaliser:
    """Services of one validated document, normalised; reads their files through ``reader``."""

    def __init__(self, reader: Reader, top: Validated, doc: Document, project: str = "") -> None:
        self.reader = reader
        self.project = project
        self.top = top
        self.doc = doc

    def service(self, name: str, spec: ServiceSpec) -> Service:
        where: Path = ("services", name)
        extras = self._extras(name, spec)  # first: its warnings come before the others
        environment = self._environment(spec, where)
        return Service(
            name=name,
            image=(spec.image or "") if spec.build is None else build_repository(self.project, name),
            command=spec.command,
            entrypoint=spec.entrypoint,
            environment=environment,
            secret_env=self._secret_env(environment),
            labels=self._labels(name, spec),
            ports=_ports(spec),
            mounts=self._mounts(spec),
            networks=_networks(spec),
            network_mode=spec.network_mode,
            restart=self._restart(name, spec),
            depends_on=tuple(
                (dep, Dependency(condition=d.condition, required=d.required, restart=d.restart))
                for dep, d in sorted(service_dependencies(spec).items())
                if not (dep in self.top.services and self.top.services[dep].provider)
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
            build=normalise_build(self.reader, self.doc, self.project, name, spec),
            update_config=_update_config(spec),
            post_start=self._hooks(spec.post_start),
            pre_stop=self._hooks(spec.pre_stop),
        )

    def _hooks(self, hooks: list[ServiceHookSpec]) -> tuple[ServiceHook, ...]:
        """Lifecycle hooks; an environment name without value is read from the project's."""
        return tuple(
            ServiceHook(
                command=h.command or (),
                user=h.user,
                privileged=h.privileged,
                working_dir=h.working_dir,
                environment=tuple(
                    (k, value)
                    for k, v in _pairs(h.environment, default=None)
                    if (value := v if v is not None else self.reader.env.get(k)) is not None
                ),
            )
            for h in hooks
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
        extras.update(further_settings(spec))
        for warning in service_warnings(name, spec):
            self.reader.warn(warning)
        return {k: v for k, v in extras.items() if v is not None and v != [] and v != {}}

    def _labels(self, name: str, spec: ServiceSpec) -> tuple[tuple[str, str], ...]:
        """``label_file`` entries in order, then ``labels``, which win (as in Compose)."""
        if not spec.label_file:
            return _labels(spec.labels)
        labels: dict[str, str] = {}
        for i, rel in enumerate(spec.label_file):
            field_path: Path = ("services", name, "label_file", i)
            path = self.reader.host_path(rel)
            where = self.doc.locate(field_path)
            text = self.reader.read_text(path, "label file", where=field_path, position=where)
            labels.update(_label_lines(text or ""))
        labels.update(_labels(spec.labels))
        return tuple(sorted(labels.items()))

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
                if obj.external:
                    self.reader.warn(
                        f"{kind}.{source}.external is a Swarm object, which a plain Docker host does "
                        f"not have: services.{name}.{kind}[{i}] is not mounted"
                    )
                    continue
                host_path = self.reader.host_path(obj.file) if obj.file is not None else ""
                content = self._file_content(kind, source, obj, host_path)
                if content is None:
                    continue
                if host_path in self.reader.decrypted:
                    host_path = ""  # copied in like inline content: the plaintext never touches disk
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
            env = self.reader.object_env.get((kind, source), self.reader.env)
            value = env.get(obj.environment)
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
        for field_path, rel, required, raw in _env_files(spec, where):
            env.update(self._env_file(field_path, rel, required, raw=raw))
        # environment: wins over env_file; a name without value is taken from the project
        # environment, and stays None (unset in the container) when it is not there either.
        for key, value in _pairs(spec.environment, default=None):
            env[key] = value if value is not None else self.reader.env.get(key)
        return tuple(sorted(env.items()))

    def _env_file(self, field_path: Path, rel: str, required: bool, *, raw: bool = False) -> dict[str, str]:
        path = self.reader.host_path(rel)
        if not required and not os.path.exists(path):
            return {}
        text = self.reader.read_text(path, "env file", where=field_path, position=self.doc.locate(field_path))
        if text is None:
            return {}
        if raw:
            return _label_lines(text)  # format: raw takes each KEY=VALUE line as it is
        parsed = self.reader.parse_env(text, path, self.reader.env)
        self.reader.problems += parsed.problems
        for var in parsed.missing:
            self.reader.warn_unset(var, f"{path}: ")
        return parsed.values

    def _secret_env(self, environment: tuple[tuple[str, str | None], ...]) -> tuple[str, ...]:
        """Names whose values hold a value from a SOPS-decrypted env file (directly, or
        interpolated from the project's ``.env``): never to be written out in the clear."""
        secrets = self.reader.secret_values
        if not secrets:
            return ()
        return tuple(k for k, v in environment if v and any(s in v for s in secrets))

    def _mounts(self, spec: ServiceSpec) -> tuple[Mount, ...]:
        mounts: list[Mount] = []
        for vol in spec.volumes:
            options = mount_options(vol)
            if vol.type == "bind":
                create = vol.bind.create_host_path if vol.bind is not None else True
                source = self.reader.host_path(vol.source)
                mounts.append(Mount("bind", vol.target, source, vol.read_only, None, create, **options))
            elif vol.type == "tmpfs":
                size = vol.tmpfs.size if vol.tmpfs is not None else None
                mounts.append(Mount("tmpfs", vol.target, "", vol.read_only, size, **options))
            elif vol.type == "image":
                mounts.append(Mount("image", vol.target, vol.source, vol.read_only, **options))
            else:
                mounts.append(Mount("volume", vol.target, vol.source, vol.read_only, **options))
        # As compose-go's EnforceUnicity: one volume per target, a later one taking an earlier's place.
        mounts = list({m.target: m for m in mounts}.values())
        if spec.use_api_socket:
            # Compose also passes the registry credentials; gitdock passes the socket alone.
            mounts.append(Mount("bind", API_SOCKET, API_SOCKET))
        tmpfs = [spec.tmpfs] if isinstance(spec.tmpfs, str) else spec.tmpfs or []
        for entry in tmpfs:
            target, size = parse_tmpfs(entry)
            mounts.append(Mount("tmpfs", target, tmpfs_size=size))
        return tuple(mounts)


def _update_config(spec: ServiceSpec) -> UpdateConfig | None:
    raw = spec.deploy.update_config if spec.deploy is not None else None
    if raw is None:
        return None
    return UpdateConfig(
        order=UpdateOrder(raw.order),
        parallelism=raw.parallelism,
        delay=(raw.delay or 0) / 10**9,
        failure_action=FailureAction(raw.failure_action),
        monitor=None if raw.monitor is None else raw.monitor / 10**9,
    )


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


def _env_files(spec: ServiceSpec, where: Path) -> list[tuple[Path, str, bool, bool]]:
    """(field path, path as written, required, is raw format) of each env file, in order."""
    if isinstance(spec.env_file, str):
        return [((*where, "env_file"), spec.env_file, True, False)]
    entries: list[tuple[Path, str, bool, bool]] = []
    for i, entry in enumerate(spec.env_file or []):
        if isinstance(entry, str):
            entries.append(((*where, "env_file", i), entry, True, False))
        else:
            entries.append(((*where, "env_file", i), entry.path, entry.required, entry.format == "raw"))
    return entries


def _label_lines(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines taken literally (label files, raw env files); ``#`` lines are comments."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


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
        sorted(
            ((key, network_attachment(net)) for key, net in spec.networks.items()),
            key=lambda pair: (-pair[1].priority, pair[0]),  # by priority, then name, as in Compose
        )
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


# --- build: ------------------------------------------------------------------------------

_REMOTE_CONTEXT_RE = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://|git@")


def build_repository(project: str, service: str) -> str:
    """What a built service's image is named, as Compose names it: ``<project>-<service>``."""
    return f"{project}-{service}".lower()


def normalise_build(
    reader: Reader, doc: Document, project: str, name: str, spec: ServiceSpec
) -> Build | None:
    """``build:`` with its paths made absolute and checked to stay in the project directory.

    Problems (a remote context, a path out of the project directory, a BuildKit-only key) go
    to ``reader.problems``; whether the context exists is the build's question, not the load's.
    """
    if spec.build is None:
        return None
    where: Path = ("services", name, "build")
    b = BuildSpec(context=spec.build) if isinstance(spec.build, str) else spec.build
    at = where if isinstance(spec.build, str) else (*where, "context")
    remote = b.context if _REMOTE_CONTEXT_RE.match(b.context) else None
    context = remote or _inside_project(
        reader, doc, b.context, reader.host_path(b.context), at, "build context"
    )
    dockerfile = b.dockerfile or "Dockerfile"
    if b.dockerfile and b.dockerfile_inline is not None:
        _problem(reader, doc, "dockerfile and dockerfile_inline cannot both be set", (*where, "dockerfile"))
    elif b.dockerfile_inline is None and context and not remote:
        full = os.path.normpath(os.path.join(context, dockerfile))
        _inside_project(reader, doc, dockerfile, full, (*where, "dockerfile"), "dockerfile")
    repository = build_repository(project, name)
    return Build(
        context=context or reader.host_path(b.context),
        repository=repository,
        dockerfile=dockerfile,
        dockerfile_inline=b.dockerfile_inline,
        args=_build_args(b.args, reader.env),
        target=b.target,
        labels=_labels(b.labels),
        network=b.network,
        extra_hosts=tuple(b.extra_hosts),
        shm_size=b.shm_size,
        no_cache=bool(b.no_cache),
        pull=bool(b.pull),
        cache_from=tuple(b.cache_from),
        platform=b.platforms[0] if b.platforms else spec.platform,
        tags=(spec.image or f"{repository}:latest", *b.tags),
        remote=remote,
        **_buildkit_settings(reader, doc, b, where, remote=remote is not None),
    )


def _build_args(args: KeyValues | None, env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Build args; one without a value takes the project environment's, or is left out (Compose)."""
    out = {}
    for key, value in _pairs(args, None):
        value = value if value is not None else env.get(key)
        if value is not None:
            out[key] = value
    return tuple(sorted(out.items()))


def _inside_project(reader: Reader, doc: Document, written: str, path: str, at: Path, what: str) -> str:
    """``path`` when it is inside the project directory (symlinks resolved), else "" and a problem."""
    root = os.path.realpath(reader.working_dir)
    real = os.path.realpath(path)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        _problem(
            reader, doc, f"{written}: the {what} is outside the project directory {reader.working_dir}", at
        )
        return ""
    return path


def _buildkit_settings(
    reader: Reader, doc: Document, b: BuildSpec, where: Path, *, remote: bool = False
) -> dict[str, Any]:
    """The BuildKit-only keys, kept for the plan, and why the classic builder cannot build them.

    ``additional_contexts``, ``secrets``, ``ssh`` and several ``platforms`` change what is built:
    the build step refuses them (``refusals``, one line each naming the key), so the document
    still loads and plans. ``cache_to`` (a cache export) is skipped and ``entitlements`` /
    ``privileged`` (grants) are not given, each with a warning.
    """
    refusals = []
    for key in BUILDKIT_BUILD_KEYS:
        if getattr(b, key) not in (None, [], {}, False):
            at = (*where, key)
            message = (
                f"`{key}` needs BuildKit, which the Engine API offers only over its session protocol; "
                "gitdock builds with the classic builder"
            )
            refusals.append(str(SpecProblem(message, format_path(at), doc.locate(at))))
    if remote and b.dockerfile_inline is not None:
        at = (*where, "dockerfile_inline")
        message = "an inline Dockerfile with a remote context needs BuildKit; the classic builder takes one"
        refusals.append(str(SpecProblem(message, format_path(at), doc.locate(at))))
    if len(b.platforms) > 1:
        at = (*where, "platforms")
        message = "several platforms need BuildKit; the classic builder builds one"
        refusals.append(str(SpecProblem(message, format_path(at), doc.locate(at))))
    if b.cache_to:
        reader.warn(f"{format_path((*where, 'cache_to'))}: skipped: the classic builder exports no cache")
    for key in ("entitlements", "privileged"):
        if getattr(b, key) not in (None, [], False):
            reader.warn(
                f"{format_path((*where, key))}: the classic builder grants none; the build runs without it"
            )
    _warn_no_effect(reader, b, where)
    return {
        "secrets": tuple(s if isinstance(s, str) else s.source for s in b.secrets),
        "ssh": tuple(key for key, _ in _pairs(b.ssh, None)),
        "additional_contexts": tuple((k, v or "") for k, v in _pairs(b.additional_contexts, None)),
        "cache_to": tuple(b.cache_to),
        "entitlements": tuple(b.entitlements),
        "privileged": bool(b.privileged),
        "platforms": tuple(b.platforms),
        "refusals": tuple(refusals),
    }


def _warn_no_effect(reader: Reader, b: BuildSpec, where: Path) -> None:
    for key in ("isolation", "provenance", "sbom"):
        if getattr(b, key) not in (None, False):
            reader.warn(f"{format_path((*where, key))}: has no effect with the classic builder")


def _problem(reader: Reader, doc: Document, message: str, at: Path) -> None:
    reader.problems.append(SpecProblem(message, format_path(at), doc.locate(at)))
