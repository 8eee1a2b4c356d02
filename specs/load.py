"""Load Compose files into a normalised ``model.Project``.

The only I/O is reading the files named (Compose files, ``.env``, services' env files):
no Docker, no network. Every problem found is collected and raised together as one
SpecError, so a file with ten mistakes is fixed in one commit, not ten.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gitdock.specs.cache import input_digest
from gitdock.specs.compose import (
    FileObjectSpec,
    FileRef,
    KeyValues,
    ServiceSpec,
    Validated,
    check_compose,
    describe_value,
    file_ref,
    is_path_source,
    parse_tmpfs,
    service_dependencies,
)
from gitdock.specs.errors import SpecError, SpecProblem
from gitdock.specs.interpolate import InterpolationError, interpolate, parse_env_file
from gitdock.specs.merge import merge_documents, merge_service, resolve_markers
from gitdock.specs.model import (
    Dependency,
    Healthcheck,
    Mount,
    Network,
    NetworkAttachment,
    PortMapping,
    Position,
    Project,
    Service,
    ServiceFile,
    Volume,
)
from gitdock.specs.yamlpos import Document, Path, PDict, format_path, load_yaml, position_of

log = logging.getLogger("gitdock.specs")

_PROJECT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")

StrPath = str | os.PathLike[str]

# Compose keys whose value goes to the Docker API as it is: (key, dotted API path).
_SIMPLE_EXTRAS = (
    ("cap_add", "HostConfig.CapAdd"),
    ("cap_drop", "HostConfig.CapDrop"),
    ("cgroup_parent", "HostConfig.CgroupParent"),
    ("cpu_period", "HostConfig.CpuPeriod"),
    ("cpu_quota", "HostConfig.CpuQuota"),
    ("cpu_shares", "HostConfig.CpuShares"),
    ("cpuset", "HostConfig.CpusetCpus"),
    ("device_cgroup_rules", "HostConfig.DeviceCgroupRules"),
    ("dns", "HostConfig.Dns"),
    ("dns_opt", "HostConfig.DnsOptions"),
    ("dns_search", "HostConfig.DnsSearch"),
    ("domainname", "Domainname"),
    ("extra_hosts", "HostConfig.ExtraHosts"),
    ("group_add", "HostConfig.GroupAdd"),
    ("init", "HostConfig.Init"),
    ("ipc", "HostConfig.IpcMode"),
    ("mac_address", "MacAddress"),
    ("mem_swappiness", "HostConfig.MemorySwappiness"),
    ("memswap_limit", "HostConfig.MemorySwap"),
    ("oom_kill_disable", "HostConfig.OomKillDisable"),
    ("oom_score_adj", "HostConfig.OomScoreAdj"),
    ("pid", "HostConfig.PidMode"),
    ("privileged", "HostConfig.Privileged"),
    ("read_only", "HostConfig.ReadonlyRootfs"),
    ("runtime", "HostConfig.Runtime"),
    ("security_opt", "HostConfig.SecurityOpt"),
    ("shm_size", "HostConfig.ShmSize"),
    ("stdin_open", "OpenStdin"),
    ("stop_signal", "StopSignal"),
    ("tty", "Tty"),
    ("userns_mode", "HostConfig.UsernsMode"),
    ("uts", "HostConfig.UTSMode"),
)


def load_project(
    files: Sequence[StrPath],
    *,
    project_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: StrPath | None = None,
    profiles: Sequence[str] | None = None,
    ignore_build: bool = False,
) -> Project:
    """Load, validate and normalise a Compose project.

    Warnings (unset variables, settings without effect) go to the ``gitdock.specs``
    logger. Raises SpecError with every problem found.
    """
    project, warnings = load_project_with_warnings(
        files,
        project_name=project_name,
        environ=environ,
        env_file=env_file,
        profiles=profiles,
        ignore_build=ignore_build,
    )
    for warning in warnings:
        log.warning("%s", warning)
    return project


def load_project_with_warnings(
    files: Sequence[StrPath],
    *,
    project_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: StrPath | None = None,
    profiles: Sequence[str] | None = None,
    ignore_build: bool = False,
) -> tuple[Project, list[str]]:
    """Like ``load_project``, but returns the warnings instead of logging them.

    ``files`` are merged in order by the Compose Specification's merge rules (``merge.py``).
    ``environ`` defaults to ``os.environ`` and overrides ``env_file``, which defaults to
    ``.env`` beside the first file when that exists. ``profiles`` are the active profiles;
    None reads ``COMPOSE_PROFILES``. ``ignore_build`` drops ``build:`` from services that
    also name an ``image:`` instead of refusing them.
    """
    project, warnings, _inputs = load_project_with_inputs(
        files,
        project_name=project_name,
        environ=environ,
        env_file=env_file,
        profiles=profiles,
        ignore_build=ignore_build,
    )
    return project, warnings


def load_project_with_inputs(
    files: Sequence[StrPath],
    *,
    project_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: StrPath | None = None,
    profiles: Sequence[str] | None = None,
    ignore_build: bool = False,
) -> tuple[Project, list[str], dict[str, str]]:
    """Like ``load_project_with_warnings``, plus every file the result depends on (see cache.py)."""
    if not files:
        raise SpecError([SpecProblem("no Compose file given")])
    loader = _Loader(
        [os.path.abspath(os.fspath(f)) for f in files],
        os.environ if environ is None else environ,
        ignore_build=ignore_build,
    )
    project, warnings = loader.run(
        project_name,
        None if env_file is None else os.path.abspath(os.fspath(env_file)),
        None if profiles is None else list(profiles),
    )
    return project, warnings, loader.inputs


class _Loader:
    def __init__(self, paths: list[str], environ: Mapping[str, str], *, ignore_build: bool = False) -> None:
        self.paths = paths
        self.working_dir = os.path.dirname(paths[0])
        self.environ = environ
        # Every file the result depends on: path -> digest of its bytes, "file" or "absent"
        # (existence checked only). What specs.cache compares to reuse a load.
        self.inputs: dict[str, str] = {}
        self.ignore_build = ignore_build
        self.env: dict[str, str] = dict(environ)
        self.problems: list[SpecProblem] = []
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        # Fields whose interpolation failed: their raw text would only add a type error.
        self._failed: set[str] = set()
        # Files read for extends (absolute path -> their services), each read once.
        self._extends_files: dict[str, Any] = {}
        self._extended: dict[tuple[str, str], Any] = {}
        self._including: list[str] = []

    def run(
        self, project_name: str | None, env_file: str | None, profiles: list[str] | None
    ) -> tuple[Project, list[str]]:
        self._load_dotenv(env_file)
        doc = Document(self._load_files(self.paths, None, self.env))
        doc.root = doc.data.pos if isinstance(doc.data, PDict) else None
        if self.ignore_build:
            _drop_build(doc.data)
        top, problems = check_compose(doc.data, doc)
        self.problems += [p for p in problems if p.path not in self._failed]
        name = self._project_name(project_name, top, doc)
        if profiles is None:
            profiles = [p.strip() for p in self.env.get("COMPOSE_PROFILES", "").split(",") if p.strip()]
        project = self._normalise(name, top, doc, set(profiles))
        if self.problems:
            raise SpecError(self.problems)
        return project, self.warnings

    # --- reading ------------------------------------------------------------------------

    def _read(
        self, path: str, what: str, *, where: Path = (), position: Position | None = None
    ) -> str | None:
        data = self._read_bytes(path, what, where=where, position=position)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        self.problems.append(
            SpecProblem(f"{what} {path}: {reason}", format_path(where), position or Position(path, 1, 1))
        )
        return None

    def _isfile(self, path: str) -> bool:
        found = os.path.isfile(path)
        self.inputs.setdefault(path, "file" if found else "absent")
        return found

    def _read_bytes(
        self, path: str, what: str, *, where: Path = (), position: Position | None = None
    ) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            self.inputs[path] = input_digest(data)
            return data
        except FileNotFoundError:
            reason = "not found"
        except IsADirectoryError:
            reason = "is a directory"
        except PermissionError:
            reason = "permission denied"
        except OSError as exc:
            reason = exc.strerror or str(exc)
        self.problems.append(
            SpecProblem(f"{what} {path}: {reason}", format_path(where), position or Position(path, 1, 1))
        )
        return None

    def _load_dotenv(self, env_file: str | None) -> None:
        path = env_file or os.path.join(self.working_dir, ".env")
        if env_file is None and not self._isfile(path):
            return
        text = self._read(path, "env file")
        if text is None:
            return
        parsed = parse_env_file(text, path, self.environ)
        self.problems += parsed.problems
        for var in parsed.missing:
            self._warn_unset(var, f"{path}: ")
        # The process environment overrides .env.
        self.env = {**parsed.values, **self.environ}

    def _warn_unset(self, var: str, where: str) -> None:
        if var not in self._warned:
            self._warned.add(var)
            self.warnings.append(f'{where}the "{var}" variable is not set, defaulting to a blank string')

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.warnings.append(message)

    def _interpolator(self, env: Mapping[str, str]) -> Callable[[str, Path, Position], str]:
        def hook(value: str, path: Path, position: Position) -> str:
            try:
                result, missing = interpolate(value, env)
            except InterpolationError as exc:
                self.problems.append(SpecProblem(str(exc), format_path(path), position))
                self._failed.add(format_path(path))
                return value
            for var in missing:
                self._warn_unset(var, f"{position}: {format_path(path)}: ")
            return result

        return hook

    def _load_file(self, path: str, env: Mapping[str, str], base_dir: str | None) -> PDict | None:
        """One Compose file as data with positions; with ``base_dir``, relative host paths
        are made absolute against it (for files included or extended from elsewhere)."""
        text = self._read(path, "Compose file")
        if text is None:
            return None
        doc, problems = load_yaml(text, path, self._interpolator(env))
        self.problems += problems
        if problems and doc.data is None:
            return None  # a parse error; already reported
        if not isinstance(doc.data, PDict):
            got = "empty" if doc.data is None else "not a mapping"
            self.problems.append(
                SpecProblem(f"Compose file {path} is {got}", "", doc.locate(()) or Position(path, 1, 1))
            )
            return None
        if base_dir is not None and base_dir != self.working_dir:
            _absolutise(doc.data, base_dir)
        return doc.data

    def _load_files(self, paths: list[str], base_dir: str | None, env: Mapping[str, str]) -> Any:
        """Merge ``paths`` in order, then apply include and extends."""
        merged: Any = None
        for path in paths:
            data = self._load_file(path, env, base_dir)
            if data is not None:
                merged = data if merged is None else merge_documents(merged, data)
        if merged is None:
            return PDict()
        resolve_markers(merged)
        includes = merged.pop("include", None)
        if includes is not None:
            self._include(merged, includes, paths[0], env)
        services = merged.get("services")
        if isinstance(services, dict):
            for name in list(services):
                services[name] = self._extend(services, name, paths[0], ())
        return merged

    # --- include ------------------------------------------------------------------------

    def _include(self, merged: PDict, includes: Any, file: str, env: Mapping[str, str]) -> None:
        """Load each included project on its own and add its resources; a clash is a problem."""
        where: Path = ("include",)
        position = merged.kpos.get("include") or Position(file, 1, 1)
        if not isinstance(includes, list):
            self.problems.append(SpecProblem("expected a list of files or mappings", "include", position))
            return
        for i, entry in enumerate(includes):
            item_pos = position_of(includes, i) or position
            spec = self._include_entry(entry, (*where, i), item_pos, os.path.dirname(file))
            if spec is None:
                continue
            paths, project_dir, env_files = spec
            if any(p in self._including for p in paths):
                message = "include cycle: " + " -> ".join([*self._including, paths[0]])
                self.problems.append(SpecProblem(message, format_path((*where, i)), item_pos))
                continue
            sub_env = dict(env)
            for env_path in env_files:
                text = self._read(env_path, "env file", where=(*where, i), position=item_pos)
                if text is not None:
                    parsed = parse_env_file(text, env_path, self.environ)
                    self.problems += parsed.problems
                    sub_env = {**parsed.values, **self.environ}
            self._including.append(paths[0])
            try:
                sub = self._load_files(paths, project_dir, sub_env)
            finally:
                self._including.pop()
            for section in ("services", "networks", "volumes", "configs", "secrets"):
                theirs = sub.get(section)
                if not isinstance(theirs, dict):
                    continue
                ours = merged.get(section)
                if not isinstance(ours, PDict):
                    ours = PDict(item_pos)
                    merged.put(section, ours, item_pos, item_pos)
                for key, value in theirs.items():
                    if key in ours:
                        self.problems.append(
                            SpecProblem(
                                f"{section[:-1]} {key} is defined here and in the included file {paths[0]}",
                                format_path((section, key)),
                                position_of(ours, key, key=True) or item_pos,
                            )
                        )
                        continue
                    ours.put(key, value, position_of(theirs, key, key=True), position_of(theirs, key))

    def _include_entry(
        self, entry: Any, where: Path, position: Position, base_dir: str
    ) -> tuple[list[str], str, list[str]] | None:
        def bad(message: str) -> None:
            self.problems.append(SpecProblem(message, format_path(where), position))

        paths: Any
        env_files: Any
        project_dir: Any
        if isinstance(entry, str):
            paths, project_dir, env_files = [entry], None, []
        elif isinstance(entry, dict):
            unknown = sorted(set(entry) - {"path", "project_directory", "env_file"})
            if unknown:
                bad(f"unknown key `{unknown[0]}` (include takes path, project_directory, env_file)")
                return None
            raw_paths = entry.get("path")
            paths = [raw_paths] if isinstance(raw_paths, str) else raw_paths
            project_dir = entry.get("project_directory")
            raw_env = entry.get("env_file", [])
            env_files = [raw_env] if isinstance(raw_env, str) else raw_env
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
                bad("include needs `path`: a file or a list of files")
                return None
            if not isinstance(env_files, list) or not all(isinstance(p, str) for p in env_files):
                bad("env_file must be a path or a list of paths")
                return None
            if project_dir is not None and not isinstance(project_dir, str):
                bad("project_directory must be a path")
                return None
        else:
            bad(f"expected a file or a mapping, got {describe_value(entry)}")
            return None
        abs_paths = [os.path.normpath(os.path.join(base_dir, os.path.expanduser(p))) for p in paths]
        directory = (
            os.path.normpath(os.path.join(base_dir, project_dir))
            if project_dir
            else os.path.dirname(abs_paths[0])
        )
        abs_env = [os.path.normpath(os.path.join(directory, p)) for p in env_files]
        if not env_files and self._isfile(os.path.join(directory, ".env")):
            abs_env = [os.path.join(directory, ".env")]
        return abs_paths, directory, abs_env

    # --- extends ------------------------------------------------------------------------

    def _extend(
        self, services: dict[str, Any], name: str, file: str, stack: tuple[tuple[str, str], ...]
    ) -> Any:
        """The service with its ``extends`` chain merged in (the Specification's merge rules)."""
        svc = services.get(name)
        if not isinstance(svc, PDict) or "extends" not in svc:
            return svc
        key = (file, name)
        if key in self._extended:
            return self._extended[key]
        where: Path = ("services", name, "extends")
        position = svc.kpos.get("extends") or svc.pos
        local = PDict(svc.pos)
        for k, v in svc.items():
            if k != "extends":
                local.put(k, v, svc.kpos.get(k), svc.vpos.get(k))
        ref = self._extends_ref(svc["extends"], where, position, file)
        if ref is None:
            return local
        base_name, base_file = ref
        if (base_file, base_name) in stack or (base_file, base_name) == key:
            chain = " -> ".join(n for _, n in (*stack, key, (base_file, base_name)))
            self.problems.append(SpecProblem(f"extends cycle: {chain}", format_path(where), position))
            return local
        base_services = services if base_file == file else self._extends_services(base_file, where, position)
        if base_services is None:
            return local
        if base_name not in base_services:
            in_file = "" if base_file == file else f" in {base_file}"
            hint = _suggest(base_name, base_services)
            self.problems.append(
                SpecProblem(
                    f'extends undefined service "{base_name}"{in_file}{hint}', format_path(where), position
                )
            )
            return local
        base = self._extend(base_services, base_name, base_file, (*stack, key))
        result = merge_service(base, local)
        self._extended[key] = result
        return result

    def _extends_ref(
        self, value: Any, where: Path, position: Position | None, file: str
    ) -> tuple[str, str] | None:
        if isinstance(value, str):
            return value, file
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"service", "file"})
            service, other = value.get("service"), value.get("file")
            if unknown:
                message = f"unknown key `{unknown[0]}` (extends takes service and file)"
            elif not isinstance(service, str):
                message = "extends needs `service`: the name of the service to extend"
            elif other is not None and not isinstance(other, str):
                message = "extends.file must be a path"
            else:
                return service, _absolute(other, os.path.dirname(file)) if other else file
        else:
            message = f"expected a service name or a mapping, got {describe_value(value)}"
        self.problems.append(SpecProblem(message, format_path(where), position))
        return None

    def _extends_services(self, path: str, where: Path, position: Position | None) -> Any:
        if path not in self._extends_files:
            if not self._isfile(path):
                self.problems.append(
                    SpecProblem(f"extends file {path}: not found", format_path(where), position)
                )
                self._extends_files[path] = None
            else:
                data = self._load_file(path, self.env, os.path.dirname(path))
                services = data.get("services") if data is not None else None
                if data is not None:
                    resolve_markers(data)
                self._extends_files[path] = services if isinstance(services, dict) else PDict()
        return self._extends_files[path]

    # --- naming -------------------------------------------------------------------------

    def _project_name(self, given: str | None, top: Validated, doc: Document) -> str:
        if given is not None:
            if not _PROJECT_NAME_RE.fullmatch(given):
                self.problems.append(SpecProblem(_bad_name(given)))
            return given
        if top.name:
            if not _PROJECT_NAME_RE.fullmatch(top.name):
                self.problems.append(SpecProblem(_bad_name(top.name), "name", doc.locate(("name",))))
            return top.name
        name = normalise_project_name(os.path.basename(self.working_dir))
        if not name:
            dirname = self.working_dir
            self.problems.append(
                SpecProblem(f"cannot make a project name from the directory {dirname}; set name:")
            )
        return name

    # --- normalising --------------------------------------------------------------------

    def _normalise(self, project: str, top: Validated, doc: Document, profiles: set[str]) -> Project:
        enabled = {
            name
            for name, spec in top.services.items()
            if not spec.profiles or "*" in profiles or profiles & set(spec.profiles)
        }
        self._check_disabled_references(top, doc, enabled)
        services = tuple(
            self._service(project, name, top.services[name], top, doc) for name in sorted(enabled)
        )
        networks = []
        for key in sorted(top.networks):
            spec = top.networks[key]
            subnets = tuple(c.subnet for c in spec.ipam.config if c.subnet) if spec.ipam else ()
            networks.append(
                Network(
                    key=key,
                    name=(spec.name or key) if spec.external else (spec.name or f"{project}_{key}"),
                    driver=spec.driver or "bridge",
                    internal=spec.internal,
                    subnets=subnets,
                    labels=_labels(spec.labels),
                    external=spec.external,
                    position=doc.locate(("networks", key), prefer_key=True),
                )
            )
        uses_default = any(key == "default" for svc in services for key, _ in svc.networks)
        if uses_default and "default" not in top.networks:
            networks.append(Network(key="default", name=f"{project}_default"))
            networks.sort(key=lambda n: n.key)
        volumes = []
        for key in sorted(top.volumes):
            vol = top.volumes[key]
            volumes.append(
                Volume(
                    key=key,
                    name=(vol.name or key) if vol.external else (vol.name or f"{project}_{key}"),
                    driver=vol.driver or "local",
                    driver_opts=tuple(sorted(vol.driver_opts.items())),
                    labels=_labels(vol.labels),
                    external=vol.external,
                    position=doc.locate(("volumes", key), prefer_key=True),
                )
            )
        return Project(
            name=project,
            services=services,
            networks=tuple(networks),
            volumes=tuple(volumes),
            working_dir=self.working_dir,
            config_files=tuple(self.paths),
        )

    def _check_disabled_references(self, top: Validated, doc: Document, enabled: set[str]) -> None:
        """An enabled service must not need a service whose profiles are all inactive."""
        for name in sorted(enabled):
            spec = top.services[name]
            for dep, how in sorted(service_dependencies(spec).items()):
                if dep in top.services and dep not in enabled and how.required:
                    profiles = ", ".join(top.services[dep].profiles)
                    self.problems.append(
                        SpecProblem(
                            f'needs service "{dep}", which is not enabled (activate profile {profiles})',
                            format_path(("services", name)),
                            doc.locate(("services", name), prefer_key=True),
                        )
                    )

    def _service(self, project: str, name: str, spec: ServiceSpec, top: Validated, doc: Document) -> Service:
        where: Path = ("services", name)
        replicas = 1
        if spec.deploy is not None and spec.deploy.replicas is not None:
            replicas = spec.deploy.replicas
        elif spec.scale is not None:
            replicas = spec.scale
        extras = self._extras(project, name, spec, top)
        return Service(
            name=name,
            image=spec.image,
            command=spec.command,
            entrypoint=spec.entrypoint,
            environment=self._environment(spec, where, doc),
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
            replicas=replicas,
            position=doc.locate(where, prefer_key=True),
            extra=tuple(sorted((path, value) for _, path, value in extras)),
            extra_keys=tuple(sorted((path, key) for key, path, _ in extras)),
            files=self._files(name, spec, top, doc),
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
            self._warn(
                f"services.{name}.deploy.restart_policy: delay and window have no effect on a "
                "plain Docker host (Swarm only)"
            )
        if policy.condition == "none":
            return "no"
        if policy.condition == "on-failure":
            return "on-failure" if policy.max_attempts is None else f"on-failure:{policy.max_attempts}"
        return "always"

    def _extras(
        self, project: str, name: str, spec: ServiceSpec, top: Validated
    ) -> list[tuple[str, str, Any]]:
        """Plain Docker settings as (Compose key, dotted Docker API path, value)."""
        out: list[tuple[str, str, Any]] = []

        def add(key: str, path: str, value: Any, *, empty: bool = False) -> None:
            if value is not None and (empty or (value != [] and value != {})):
                out.append((key, path, value))

        for key, path in _SIMPLE_EXTRAS:
            add(key, path, getattr(spec, key))
        add("annotations", "HostConfig.Annotations", dict(_labels(spec.annotations)) or None)
        add("sysctls", "HostConfig.Sysctls", dict(_labels(spec.sysctls)) or None)
        add("storage_opt", "HostConfig.StorageOpt", dict(sorted(spec.storage_opt.items())) or None)
        add("cgroup", "HostConfig.CgroupnsMode", spec.cgroup)
        add(
            "devices",
            "HostConfig.Devices",
            [
                {
                    "PathOnHost": d.source,
                    "PathInContainer": d.target or d.source,
                    "CgroupPermissions": d.permissions,
                }
                for d in spec.devices
            ],
        )
        for entry in spec.expose:
            port, _, protocol = entry.partition("/")
            low, _, high = port.partition("-")
            for number in range(int(low), int(high or low) + 1):
                add("expose", f"ExposedPorts.{number}/{protocol or 'tcp'}", {}, empty=True)
        add(
            "ulimits",
            "HostConfig.Ulimits",
            [
                {"Name": k, "Soft": v, "Hard": v}
                if isinstance(v, int)
                else {"Name": k, "Soft": v.soft, "Hard": v.hard}
                for k, v in sorted(spec.ulimits.items())
            ],
        )
        if spec.logging is not None:
            config: dict[str, Any] = {"Type": spec.logging.driver or "json-file"}
            config["Config"] = {k: v or "" for k, v in sorted((spec.logging.options or {}).items())}
            add("logging", "HostConfig.LogConfig", config)
        if spec.stop_grace_period is not None:
            add("stop_grace_period", "StopTimeout", spec.stop_grace_period // 10**9)
        add("links", "HostConfig.Links", [self._link(project, link, top) for link in spec.links])
        add(
            "volumes_from",
            "HostConfig.VolumesFrom",
            [self._volumes_from(project, entry, top) for entry in spec.volumes_from],
        )
        resources = spec.deploy.resources if spec.deploy else None
        limits = resources.limits if resources else None
        reservations = resources.reservations if resources else None
        for legacy, value, deployed, path in (
            ("mem_limit", spec.mem_limit, limits.memory if limits else None, "HostConfig.Memory"),
            ("cpus", spec.cpus, limits.cpus if limits else None, "HostConfig.NanoCpus"),
            ("pids_limit", spec.pids_limit, limits.pids if limits else None, "HostConfig.PidsLimit"),
            (
                "mem_reservation",
                spec.mem_reservation,
                reservations.memory if reservations else None,
                "HostConfig.MemoryReservation",
            ),
        ):
            chosen, key = (value, legacy) if value is not None else (deployed, "deploy")
            if chosen is not None and path == "HostConfig.NanoCpus":
                chosen = round(float(chosen) * 1e9)
            add(key, path, chosen)
        if reservations is not None and reservations.cpus is not None:
            self._warn(
                f"services.{name}.deploy.resources.reservations.cpus has no effect on a plain Docker host"
            )
        return out

    def _container_of(self, project: str, service: str, top: Validated) -> str:
        spec = top.services.get(service)
        if spec is not None and spec.container_name:
            return spec.container_name
        return f"{project}-{service}-1"

    def _link(self, project: str, link: str, top: Validated) -> str:
        service, _, alias = link.partition(":")
        return f"{self._container_of(project, service, top)}:{alias or service}"

    def _volumes_from(self, project: str, entry: str, top: Validated) -> str:
        if entry.startswith("container:"):
            return entry.removeprefix("container:")
        service, sep, mode = entry.partition(":")
        return self._container_of(project, service, top) + (f":{mode}" if sep else "")

    def _files(self, name: str, spec: ServiceSpec, top: Validated, doc: Document) -> tuple[ServiceFile, ...]:
        """The service's configs and secrets, with their content read now."""
        files: list[ServiceFile] = []
        for kind in ("configs", "secrets"):
            defined: Mapping[str, FileObjectSpec] = top.configs if kind == "configs" else top.secrets
            for i, entry in enumerate(getattr(spec, kind)):
                source, target = file_ref(kind, entry)
                obj = defined.get(source)
                if obj is None:
                    continue  # an undefined reference, reported by check_semantics
                where: Path = (kind, source)
                content: bytes | None = None
                host_path = ""
                if obj.file is not None:
                    host_path = self._host_path(obj.file)
                    content = self._read_bytes(
                        host_path,
                        f"{kind[:-1]} file",
                        where=(*where, "file"),
                        position=doc.locate((*where, "file")),
                    )
                elif obj.environment is not None:
                    value = self.env.get(obj.environment)
                    if value is None:
                        self.problems.append(
                            SpecProblem(
                                f"the variable {obj.environment} is not set",
                                format_path((*where, "environment")),
                                doc.locate((*where, "environment")),
                            )
                        )
                    content = (value or "").encode()
                else:
                    content = (getattr(obj, "content", None) or "").encode()
                if content is None:
                    continue
                ref = entry if isinstance(entry, FileRef) else None
                if host_path and ref is not None and (ref.mode is not None or ref.uid or ref.gid):
                    self._warn(
                        f"services.{name}.{kind}[{i}]: uid, gid and mode have no effect on a {kind[:-1]} "
                        "read from a file (it is bind-mounted, as in Compose)"
                    )
                files.append(
                    ServiceFile(
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
                )
        return tuple(files)

    def _environment(
        self, spec: ServiceSpec, where: Path, doc: Document
    ) -> tuple[tuple[str, str | None], ...]:
        env: dict[str, str | None] = {}
        entries: list[tuple[Path, str, bool]] = []
        if isinstance(spec.env_file, str):
            entries.append(((*where, "env_file"), spec.env_file, True))
        elif spec.env_file is not None:
            for i, entry in enumerate(spec.env_file):
                path, required = (entry, True) if isinstance(entry, str) else (entry.path, entry.required)
                entries.append(((*where, "env_file", i), path, required))
        for field_path, rel, required in entries:
            path = self._host_path(rel)
            if not required and not os.path.exists(path):
                continue
            text = self._read(path, "env file", where=field_path, position=doc.locate(field_path))
            if text is None:
                continue
            parsed = parse_env_file(text, path, self.env)
            self.problems += parsed.problems
            for var in parsed.missing:
                self._warn_unset(var, f"{path}: ")
            env.update(parsed.values)
        # environment: wins over env_file; a name without value is taken from the project
        # environment, and stays None (unset in the container) when it is not there either.
        for key, value in _pairs(spec.environment, default=None):
            env[key] = value if value is not None else self.env.get(key)
        return tuple(sorted(env.items()))

    def _host_path(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.working_dir, os.path.expanduser(path)))

    def _mounts(self, spec: ServiceSpec) -> tuple[Mount, ...]:
        mounts: list[Mount] = []
        for vol in spec.volumes:
            if vol.type == "bind":
                create = vol.bind.create_host_path if vol.bind is not None else True
                mounts.append(
                    Mount("bind", vol.target, self._host_path(vol.source), vol.read_only, None, create)
                )
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


def normalise_project_name(name: str) -> str:
    """Make a project name from a directory name as Compose does: lowercase, only
    ``[a-z0-9_-]``, starting with a letter or digit. May return ""."""
    return re.sub(r"[^a-z0-9_-]", "", name.lower()).lstrip("_-")


def _bad_name(name: str) -> str:
    return (
        f'"{name}" is not a valid project name: use lowercase letters, digits, "_" and "-", '
        "starting with a letter or digit"
    )


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f", did you mean {close[0]}?" if close else ""


def _drop_build(data: Any) -> None:
    """``ignore_build``: a service that names an image is deployed from it; build is dropped."""
    services = data.get("services") if isinstance(data, dict) else None
    if isinstance(services, dict):
        for svc in services.values():
            if isinstance(svc, dict) and "build" in svc and svc.get("image"):
                del svc["build"]


def _absolute(path: str, base_dir: str) -> str:
    if path.startswith("~") or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def _absolutise(data: PDict, base_dir: str) -> None:
    """Make a file's relative host paths absolute against ``base_dir`` (in place), so they
    keep their meaning when the file's services are included or extended elsewhere."""
    for section in ("configs", "secrets"):
        objects = data.get(section)
        if isinstance(objects, dict):
            for obj in objects.values():
                if isinstance(obj, dict) and isinstance(obj.get("file"), str):
                    obj["file"] = _absolute(obj["file"], base_dir)
    services = data.get("services")
    if not isinstance(services, dict):
        return
    for svc in services.values():
        if not isinstance(svc, dict):
            continue
        volumes = svc.get("volumes")
        if isinstance(volumes, list):
            for i, vol in enumerate(volumes):
                if isinstance(vol, str):
                    source, sep, rest = vol.partition(":")
                    if sep and is_path_source(source):
                        volumes[i] = f"{_absolute(source, base_dir)}:{rest}"
                elif (
                    isinstance(vol, dict) and vol.get("type") == "bind" and isinstance(vol.get("source"), str)
                ):
                    vol["source"] = _absolute(vol["source"], base_dir)
        env_file = svc.get("env_file")
        if isinstance(env_file, str):
            svc["env_file"] = _absolute(env_file, base_dir)
        elif isinstance(env_file, list):
            for i, entry in enumerate(env_file):
                if isinstance(entry, str):
                    env_file[i] = _absolute(entry, base_dir)
                elif isinstance(entry, dict) and isinstance(entry.get("path"), str):
                    entry["path"] = _absolute(entry["path"], base_dir)
        extends = svc.get("extends")
        if isinstance(extends, dict) and isinstance(extends.get("file"), str):
            extends["file"] = _absolute(extends["file"], base_dir)


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
