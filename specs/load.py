"""Load Compose files into a normalised ``model.Project``.

The only I/O is reading the files named (Compose files, ``.env``, services' env files):
no Docker, no network. Every problem found is collected and raised together as one
SpecError, so a file with ten mistakes is fixed in one commit, not ten.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .compose import (
    KeyValues,
    ServiceSpec,
    Validated,
    check_compose,
    parse_tmpfs,
    service_dependencies,
)
from .errors import SpecError, SpecProblem
from .interpolate import InterpolationError, interpolate, parse_env_file
from .model import (
    Dependency,
    Healthcheck,
    Mount,
    Network,
    NetworkAttachment,
    PortMapping,
    Position,
    Project,
    Service,
    Volume,
)
from .yamlpos import Document, Path, format_path, load_yaml

log = logging.getLogger("gitdock.specs")

_PROJECT_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")

StrPath = str | os.PathLike[str]


def load_project(
    files: Sequence[StrPath],
    *,
    project_name: str | None = None,
    environ: Mapping[str, str] | None = None,
    env_file: StrPath | None = None,
) -> Project:
    """Load, validate and normalise a Compose project.

    Warnings (unset variables) go to the ``gitdock.specs`` logger. Raises SpecError with
    every problem found.
    """
    project, warnings = load_project_with_warnings(
        files, project_name=project_name, environ=environ, env_file=env_file
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
) -> tuple[Project, list[str]]:
    """Like ``load_project``, but returns the warnings instead of logging them.

    ``files`` are merged in order (later files override earlier ones key by key; lists
    are replaced). ``environ`` defaults to ``os.environ`` and overrides ``env_file``, which
    defaults to ``.env`` beside the first file when that exists.
    """
    if not files:
        raise SpecError([SpecProblem("no Compose file given")])
    loader = _Loader(
        [os.path.abspath(os.fspath(f)) for f in files],
        os.environ if environ is None else environ,
    )
    return loader.run(project_name, None if env_file is None else os.path.abspath(os.fspath(env_file)))


class _Loader:
    def __init__(self, paths: list[str], environ: Mapping[str, str]) -> None:
        self.paths = paths
        self.working_dir = os.path.dirname(paths[0])
        self.environ = environ
        self.env: dict[str, str] = dict(environ)
        self.problems: list[SpecProblem] = []
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        # Fields whose interpolation failed: their raw text would only add a type error.
        self._failed: set[str] = set()

    def run(self, project_name: str | None, env_file: str | None) -> tuple[Project, list[str]]:
        self._load_dotenv(env_file)
        doc = self._load_documents()
        top, problems = check_compose(doc.data, doc)
        self.problems += [p for p in problems if p.path not in self._failed]
        name = self._project_name(project_name, top, doc)
        project = self._normalise(name, top, doc)
        if self.problems:
            raise SpecError(self.problems)
        return project, self.warnings

    # --- reading ------------------------------------------------------------------------

    def _read(
        self, path: str, what: str, *, where: Path = (), position: Position | None = None
    ) -> str | None:
        try:
            with open(path, encoding="utf-8") as fh:
                return fh.read()
        except FileNotFoundError:
            reason = "not found"
        except IsADirectoryError:
            reason = "is a directory"
        except PermissionError:
            reason = "permission denied"
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        except OSError as exc:
            reason = exc.strerror or str(exc)
        self.problems.append(
            SpecProblem(f"{what} {path}: {reason}", format_path(where), position or Position(path, 1, 1))
        )
        return None

    def _load_dotenv(self, env_file: str | None) -> None:
        path = env_file or os.path.join(self.working_dir, ".env")
        if env_file is None and not os.path.isfile(path):
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

    def _interpolate(self, value: str, path: Path, position: Position) -> str:
        try:
            result, missing = interpolate(value, self.env)
        except InterpolationError as exc:
            self.problems.append(SpecProblem(str(exc), format_path(path), position))
            self._failed.add(format_path(path))
            return value
        for var in missing:
            self._warn_unset(var, f"{position}: {format_path(path)}: ")
        return result

    def _load_documents(self) -> Document:
        merged = Document({})
        for path in self.paths:
            text = self._read(path, "Compose file")
            if text is None:
                continue
            doc, problems = load_yaml(text, path, self._interpolate)
            self.problems += problems
            if problems and doc.data is None:
                continue  # a parse error; already reported
            if not isinstance(doc.data, dict):
                got = "empty" if doc.data is None else "not a mapping"
                self.problems.append(
                    SpecProblem(f"Compose file {path} is {got}", "", doc.locate(()) or Position(path, 1, 1))
                )
                continue
            merged.data = _merge(merged.data, doc.data)
            merged.values.update(doc.values)
            merged.keys.update(doc.keys)
        return merged

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

    def _normalise(self, project: str, top: Validated, doc: Document) -> Project:
        services = tuple(self._service(name, top.services[name], doc) for name in sorted(top.services))
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

    def _service(self, name: str, spec: ServiceSpec, doc: Document) -> Service:
        where: Path = ("services", name)
        replicas = 1
        if spec.deploy is not None and spec.deploy.replicas is not None:
            replicas = spec.deploy.replicas
        elif spec.scale is not None:
            replicas = spec.scale
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
            restart=spec.restart,
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
        )

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


def _merge(base: Any, override: Any) -> Any:
    """Merge two documents: mappings key by key, anything else replaced by ``override``."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base[key], value) if key in base else value
        return out
    return override


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
