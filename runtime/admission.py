"""Admission for Compose: the deploy policy, modelled on Kubernetes' Pod Security Standards.

A policy is a level and its exceptions. ``privileged`` lets anything through; ``baseline``
refuses what hands a container the host (privileged mode, the host's namespaces, binds of the
Docker socket or system directories, capabilities beyond Docker's default set, devices,
unconfined security profiles, host cgroups, unsafe sysctls); ``restricted`` adds what makes a
container hardened (a non-root user, a read-only root filesystem, ``cap_drop: [ALL]``, binds
only under the listed prefixes, no privilege escalation). Each check names one Compose key of
one service, so an exception (``{service: monitor, field: pid}``) lifts exactly that key.

``check_project`` returns every violation at once; ``admit_project`` raises them as one
PolicyRefused (a PermanentError: a new commit must fix it) before anything is touched.

Host paths are normalised lexically (``..``, ``.``, repeated and trailing slashes): this module
is pure, it reads no file and talks to nothing, so it cannot follow a symlink on the host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from gitdock.specs.errors import PermanentError
from gitdock.specs.model import Project, Service

__all__ = [
    "BASELINE",
    "DEFAULT_CAPABILITIES",
    "FIELDS",
    "FORBIDDEN_HOST_PATHS",
    "PRIVILEGED",
    "SAFE_SYSCTLS",
    "Exemption",
    "HostPath",
    "Level",
    "Policy",
    "PolicyConfigError",
    "PolicyRefused",
    "Rule",
    "Violation",
    "admit_project",
    "check_project",
    "host_paths",
    "normalise_host_path",
    "parse_policy",
]


class Level(str, Enum):
    """How much a revision may ask of the host, as Kubernetes' Pod Security Standards name it."""

    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


class Rule(str, Enum):
    """The controls, named as the Pod Security Standards name theirs."""

    PRIVILEGED = "privileged-containers"
    HOST_NAMESPACES = "host-namespaces"
    HOST_PATHS = "host-paths"
    CAPABILITIES = "capabilities"
    DEVICES = "host-devices"
    SECURITY_PROFILES = "security-profiles"
    CGROUPS = "host-cgroups"
    SYSCTLS = "sysctls"
    NON_ROOT = "running-as-non-root"
    READ_ONLY_ROOT = "read-only-root-filesystem"
    DROP_CAPABILITIES = "capabilities-dropped"
    BIND_PREFIXES = "bind-prefixes"
    PRIVILEGE_ESCALATION = "privilege-escalation"


# The capabilities Docker grants a container by default (moby's oci/caps/defaults.go).
DEFAULT_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)

# The sysctls Kubernetes' baseline level allows: namespaced, and isolated from the host.
SAFE_SYSCTLS: Final = frozenset(
    {
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.ping_group_range",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_syncookies",
    }
)

# Host paths no bind may be, lie under, or contain (``/`` only as itself): the Docker socket,
# Docker's data, and the directories whose files are the host (writing one is root on it).
FORBIDDEN_HOST_PATHS: Final = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/var/lib/docker",
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/root",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/usr",
    "/",
)

# The Compose keys an exception may name.
FIELDS: Final = frozenset(
    {
        "privileged",
        "pid",
        "ipc",
        "uts",
        "userns_mode",
        "volumes",
        "volumes_from",
        "configs",
        "secrets",
        "cap_add",
        "cap_drop",
        "devices",
        "device_cgroup_rules",
        "security_opt",
        "cgroup",
        "cgroup_parent",
        "sysctls",
        "user",
        "read_only",
    }
)


@dataclass(frozen=True)
class Exemption:
    """One key of one service the policy does not check (``service: "*"`` is every service)."""

    service: str
    field: str


@dataclass(frozen=True)
class Policy:
    """A level, its exceptions and (restricted) the host paths binds may come from."""

    level: Level = Level.PRIVILEGED
    exemptions: tuple[Exemption, ...] = ()
    bind_prefixes: tuple[str, ...] = ()

    def is_exempt(self, service: str, field: str) -> bool:
        return any(e.field == field and e.service in (service, "*") for e in self.exemptions)


PRIVILEGED: Final = Policy(Level.PRIVILEGED)
BASELINE: Final = Policy(Level.BASELINE)


@dataclass(frozen=True)
class Violation:
    """One refused setting: ``services.<service>.<field>: <message>``."""

    service: str
    field: str
    rule: Rule
    message: str

    @property
    def path(self) -> str:
        return f"services.{self.service}.{self.field}"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class PolicyRefused(PermanentError):
    """The revision breaks the deploy policy; carries every violation, one line each."""

    def __init__(self, level: Level, violations: Sequence[Violation]) -> None:
        self.level = level
        self.violations = tuple(violations)
        super().__init__("\n".join(self.lines))

    @property
    def lines(self) -> list[str]:
        """``policy <level>: services.<service>.<field>: <rule>``, one per violation."""
        return [f"policy {self.level.value}: {v}" for v in self.violations]


class PolicyConfigError(PermanentError):
    """A policy in the agent config or a ``--policy-file`` is malformed."""


# --- checking ------------------------------------------------------------------------------


def check_project(project: Project, policy: Policy) -> list[Violation]:
    """Every violation of ``policy`` in ``project``, by service then check, exceptions left out.

    This is a purely computational function with no side effects.
    """
    if policy.level is Level.PRIVILEGED:
        return []
    checks = _BASELINE if policy.level is Level.BASELINE else _BASELINE + _RESTRICTED
    bound = _bound_volumes(project)
    found: list[Violation] = []
    for service in project.services:
        extra, paths = dict(service.extra), list(host_paths(project, service, bound))
        for check in checks:
            found += (
                v for v in check(service, extra, paths, policy) if not policy.is_exempt(v.service, v.field)
            )
    return found


def admit_project(project: Project, policy: Policy) -> None:
    """Raise PolicyRefused naming every violation of ``policy`` in ``project``. Pure."""
    violations = check_project(project, policy)
    if violations:
        raise PolicyRefused(policy.level, violations)


# (Compose key, normalised host path) of one thing a service binds from the host.
HostPath = tuple[str, str]
_Check = Callable[[Service, Mapping[str, Any], Sequence[HostPath], Policy], Iterator[Violation]]

_NAMESPACES: Final = {"pid": "PID", "ipc": "IPC", "uts": "UTS", "userns_mode": "user"}


def _check_privileged(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    if extra.get("privileged") is True:
        yield Violation(svc.name, "privileged", Rule.PRIVILEGED, "privileged containers are not allowed")


def _check_namespaces(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    for key, what in _NAMESPACES.items():
        if str(extra.get(key, "")).lower() == "host":
            message = f"sharing the host's {what} namespace is not allowed"
            yield Violation(svc.name, key, Rule.HOST_NAMESPACES, message)


def _check_host_paths(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    for field, path in paths:
        why = _forbidden_because(path)
        if why is not None:
            yield Violation(
                svc.name, field, Rule.HOST_PATHS, f"binding the host path {path} is not allowed{why}"
            )
    for entry in extra.get("volumes_from", ()):
        if str(entry).startswith("container:"):
            message = f"{entry}: the volumes of a container outside the project are not allowed"
            yield Violation(svc.name, "volumes_from", Rule.HOST_PATHS, message)


def _check_capabilities(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    restricted = policy.level is Level.RESTRICTED
    allowed = frozenset({"NET_BIND_SERVICE"}) if restricted else DEFAULT_CAPABILITIES
    for cap in extra.get("cap_add", ()):
        name = _capability(cap)
        if name not in allowed:
            why = "only NET_BIND_SERVICE may be added" if restricted else "outside Docker's default set"
            yield Violation(
                svc.name, "cap_add", Rule.CAPABILITIES, f"adding capability {name} is not allowed ({why})"
            )


def _check_devices(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    for device in extra.get("devices", ()):
        message = f"host device {device.get('source', '?')} is not allowed"
        yield Violation(svc.name, "devices", Rule.DEVICES, message)
    if extra.get("device_cgroup_rules"):
        yield Violation(svc.name, "device_cgroup_rules", Rule.DEVICES, "device cgroup rules are not allowed")


def _check_security_opt(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    for option in extra.get("security_opt", ()):
        key, value = _option(str(option))
        if (key, value) in _UNCONFINED:
            message = f"{option}: {_UNCONFINED[(key, value)]} is not allowed"
            yield Violation(svc.name, "security_opt", Rule.SECURITY_PROFILES, message)


_UNCONFINED: Final = {
    ("seccomp", "unconfined"): "running without a seccomp profile",
    ("apparmor", "unconfined"): "running without an AppArmor profile",
    ("label", "disable"): "turning SELinux labelling off",
    ("systempaths", "unconfined"): "unmasking the kernel's /proc and /sys paths",
}


def _check_cgroups(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    if extra.get("cgroup_parent"):
        message = "placing the container under a host cgroup is not allowed"
        yield Violation(svc.name, "cgroup_parent", Rule.CGROUPS, message)
    if str(extra.get("cgroup", "")).lower() == "host":
        yield Violation(
            svc.name, "cgroup", Rule.CGROUPS, "sharing the host's cgroup namespace is not allowed"
        )


def _check_sysctls(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    for name in extra.get("sysctls", {}):
        if str(name).replace("/", ".") not in SAFE_SYSCTLS:
            yield Violation(svc.name, "sysctls", Rule.SYSCTLS, f"sysctl {name} is not in the safe set")


_BASELINE: Final[tuple[_Check, ...]] = (
    _check_privileged,
    _check_namespaces,
    _check_host_paths,
    _check_capabilities,
    _check_devices,
    _check_security_opt,
    _check_cgroups,
    _check_sysctls,
)


def _check_user(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    user = (svc.user or "").partition(":")[0].strip()
    if not user:
        yield Violation(
            svc.name,
            "user",
            Rule.NON_ROOT,
            "a non-root user is required (user: is not set; the image's may be root)",
        )
    elif user == "root" or (user.isdigit() and int(user) == 0):
        yield Violation(svc.name, "user", Rule.NON_ROOT, f"a non-root user is required ({svc.user} is root)")


def _check_read_only(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    if extra.get("read_only") is not True:
        message = "a read-only root filesystem is required (read_only: true)"
        yield Violation(svc.name, "read_only", Rule.READ_ONLY_ROOT, message)


def _check_cap_drop(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    if "ALL" not in {_capability(c) for c in extra.get("cap_drop", ())}:
        message = "every capability must be dropped (cap_drop: [ALL])"
        yield Violation(svc.name, "cap_drop", Rule.DROP_CAPABILITIES, message)


def _check_bind_prefixes(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    prefixes = [normalise_host_path(p) for p in policy.bind_prefixes]
    listed = ", ".join(prefixes) if prefixes else "none are listed"
    for field, path in paths:
        if _forbidden_because(path) is None and not any(_is_within(path, p) for p in prefixes):
            message = f"the host path {path} is not under an allowed bind prefix ({listed})"
            yield Violation(svc.name, field, Rule.BIND_PREFIXES, message)


def _check_escalation(
    svc: Service, extra: Mapping[str, Any], paths: Sequence[HostPath], policy: Policy
) -> Iterator[Violation]:
    for option in extra.get("security_opt", ()):
        if _option(str(option)) == ("no-new-privileges", "false"):
            message = f"{option}: privilege escalation is not allowed"
            yield Violation(svc.name, "security_opt", Rule.PRIVILEGE_ESCALATION, message)


_RESTRICTED: Final[tuple[_Check, ...]] = (
    _check_user,
    _check_read_only,
    _check_cap_drop,
    _check_bind_prefixes,
    _check_escalation,
)


# --- host paths ----------------------------------------------------------------------------


def host_paths(project: Project, svc: Service, bound: Mapping[str, str] | None = None) -> Iterator[HostPath]:
    """(Compose key, normalised host path) of everything the service binds from the host:
    bind mounts, config and secret files, and named volumes the local driver binds
    (``bound``: ``_bound_volumes(project)``, when the caller has it already)."""
    bound = _bound_volumes(project) if bound is None else bound
    for mount in svc.mounts:
        if mount.type == "bind":
            yield "volumes", _absolute(project, mount.source)
        elif mount.type == "volume" and mount.source in bound:
            yield "volumes", bound[mount.source]
    for file in svc.files:
        if file.source:
            yield file.kind, _absolute(project, file.source)


def _bound_volumes(project: Project) -> dict[str, str]:
    """Project volumes the local driver binds to a host directory (``o: bind``/``rbind``,
    ``device:``), by key."""
    out: dict[str, str] = {}
    for volume in project.volumes:
        opts = dict(volume.driver_opts)
        binds = {"bind", "rbind"} & set(opts.get("o", "").split(","))
        if volume.driver == "local" and binds and opts.get("device"):
            out[volume.key] = _absolute(project, opts["device"])
    return out


def _absolute(project: Project, path: str) -> str:
    return normalise_host_path(path if path.startswith("/") else f"{project.working_dir}/{path}")


def normalise_host_path(path: str) -> str:
    """``path`` made absolute and lexical: ``..`` and ``.`` resolved, repeated and trailing
    slashes dropped (``/srv/../etc/`` is ``/etc``). A ``..`` above the root stays at the root."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _ancestors(path: str) -> Iterator[str]:
    """The directories above a normalised path, nearest first, ``/`` left out."""
    while (path := path.rpartition("/")[0]) != "":
        yield path


_FORBIDDEN: Final = frozenset(FORBIDDEN_HOST_PATHS)
# Each directory above a forbidden path -> the first forbidden path it holds.
_HOLDERS: Final = {a: f for f in reversed(FORBIDDEN_HOST_PATHS) for a in _ancestors(f)}


def _forbidden_because(path: str) -> str | None:
    """Why the normalised ``path`` may not be bound ("", " (under /etc)", " (it holds ...)"),
    or None when it may. A set lookup per directory level: binds are checked per service."""
    if path in _FORBIDDEN:
        return ""
    if path in _HOLDERS:
        return f" (it holds {_HOLDERS[path]})"
    under = next((a for a in _ancestors(path) if a in _FORBIDDEN), None)
    return f" (under {under})" if under is not None else None


def _capability(name: Any) -> str:
    """A capability as Docker compares them: upper case, without ``CAP_``."""
    return str(name).upper().removeprefix("CAP_")


def _option(option: str) -> tuple[str, str]:
    """A ``security_opt`` entry as (key, value); Docker takes both ``=`` and ``:``."""
    for sep in ("=", ":"):
        key, found, value = option.partition(sep)
        if found:
            return key.strip().lower(), value.strip().lower()
    return option.strip().lower(), ""


# --- the policy's configuration ------------------------------------------------------------

_POLICY_KEYS: Final = ("level", "exceptions", "bind_prefixes")


def parse_policy(data: Any, where: str = "policy") -> Policy:
    """A Policy from its configuration: a level name, or ``{level, exceptions, bind_prefixes}``.

    ``where`` prefixes each message's field (``sources[0].policy``). Raises PolicyConfigError.
    """
    if isinstance(data, str | Level):
        data = {"level": data}
    if not isinstance(data, Mapping):
        raise PolicyConfigError(f"{where or 'policy'}: expected a level name or a mapping with `level`")
    unknown = [str(k) for k in data if k not in _POLICY_KEYS]
    if unknown:
        raise PolicyConfigError(f"{_at(where, unknown[0])}: unknown key (known: {', '.join(_POLICY_KEYS)})")
    return Policy(
        _parse_level(data.get("level", Level.BASELINE.value), _at(where, "level")),
        tuple(
            _parse_exemption(e, _at(where, f"exceptions[{i}]"))
            for i, e in enumerate(_list(data, "exceptions", where))
        ),
        tuple(
            _parse_prefix(p, _at(where, f"bind_prefixes[{i}]"))
            for i, p in enumerate(_list(data, "bind_prefixes", where))
        ),
    )


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _list(data: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = data.get(key) or []
    if not isinstance(value, list | tuple):
        raise PolicyConfigError(f"{_at(where, key)}: expected a list")
    return list(value)


def _parse_level(value: Any, where: str) -> Level:
    try:
        return Level(value)
    except ValueError:
        names = ", ".join(level.value for level in Level)
        raise PolicyConfigError(f"{where}: {value!r} is not a policy level ({names})") from None


def _parse_exemption(value: Any, where: str) -> Exemption:
    if not isinstance(value, Mapping) or set(value) != {"service", "field"}:
        raise PolicyConfigError(f"{where}: an exception is {{service: NAME, field: KEY}}")
    service, field = value["service"], value["field"]
    if not isinstance(service, str) or not service:
        raise PolicyConfigError(f'{_at(where, "service")}: expected a service name (or "*")')
    if field not in FIELDS:
        known = ", ".join(sorted(FIELDS))
        raise PolicyConfigError(f"{_at(where, 'field')}: {field!r} is not a key the policy checks ({known})")
    return Exemption(service, str(field))


def _parse_prefix(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise PolicyConfigError(f"{where}: {value!r} is not an absolute host path")
    return normalise_host_path(value)
