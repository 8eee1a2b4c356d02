"""The desired state of one Compose project, normalised.

This is what the loader produces and what the planner consumes. Every value is already
interpolated, defaulted and validated: the planner never sees raw YAML. All classes are
frozen so a Project can be shared between threads and hashed into config hashes.

This module is pure: it imports nothing that does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

# Field metadata: leave the field out of config hashes while it has its default, so adding
# a field to a hashed class does not change the hash of every existing container.
OMIT_DEFAULT = "gitdock.omit_default"


def when_set(default: Any) -> Any:
    """A dataclass field that config hashes see only when it differs from ``default``."""
    return field(default=default, metadata={OMIT_DEFAULT: True})


class Condition(str, Enum):
    """A depends_on condition, as the Compose Specification names it."""

    STARTED = "service_started"
    HEALTHY = "service_healthy"
    COMPLETED = "service_completed_successfully"


class UpdateOrder(str, Enum):
    STOP_FIRST = "stop-first"
    START_FIRST = "start-first"


class FailureAction(str, Enum):
    ROLLBACK = "rollback"
    PAUSE = "pause"
    CONTINUE = "continue"


@dataclass(frozen=True)
class UpdateConfig:
    """``deploy.update_config``: how a service's containers are replaced, not what runs (so it
    is in no config hash). Durations in seconds; ``parallelism`` 0 is all at once; ``monitor``
    None is the settle time of the health gate."""

    order: UpdateOrder = UpdateOrder.STOP_FIRST
    parallelism: int = 1
    delay: float = 0.0
    failure_action: FailureAction = FailureAction.PAUSE
    monitor: float | None = None


@dataclass(frozen=True)
class Position:
    """Where a value came from: file, 1-based line and column."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True)
class PortMapping:
    """One published or exposed port. ``published`` is None for a random host port."""

    target: int
    published: str | None = None  # "8080" or a range "8080-8081"; None lets Docker choose
    host_ip: str = ""
    protocol: str = "tcp"


@dataclass(frozen=True)
class Mount:
    """One service mount.

    ``type`` is ``volume`` (``source`` is the project-level volume key, or "" for an
    anonymous volume), ``bind`` (``source`` is an absolute host path), ``tmpfs`` or
    ``image`` (``source`` is an image reference; Engine API 1.48).
    """

    type: str
    target: str
    source: str = ""
    read_only: bool = False
    tmpfs_size: int | None = None  # bytes, tmpfs only
    create_host_path: bool = True  # bind only: create the host path when missing
    # Issue 11's options: hashed only when set (see when_set), so existing hashes stay.
    propagation: str | None = when_set(None)  # bind only: rshared, rslave, ...
    selinux: str | None = when_set(None)  # bind only: z or Z
    non_recursive: bool = when_set(False)  # bind only: recursive: disabled
    nocopy: bool = when_set(False)  # volume only: do not copy the image's files in
    volume_labels: tuple[tuple[str, str], ...] = when_set(())  # volume only
    tmpfs_mode: int | None = when_set(None)  # tmpfs only
    image_subpath: str | None = when_set(None)  # image only: the image's directory to mount


@dataclass(frozen=True)
class NetworkAttachment:
    """A service's membership of one project network (keyed by the project-level key)."""

    aliases: tuple[str, ...] = ()
    ipv4_address: str | None = None
    ipv6_address: str | None = when_set(None)
    link_local_ips: tuple[str, ...] = when_set(())
    mac_address: str | None = when_set(None)
    driver_opts: tuple[tuple[str, str], ...] = when_set(())
    priority: int = when_set(0)  # networks are connected in descending priority


@dataclass(frozen=True)
class Healthcheck:
    """A container healthcheck. Durations are nanoseconds, as the Docker API takes them."""

    test: tuple[str, ...]  # ("CMD", ...), ("CMD-SHELL", "..."), or ("NONE",)
    interval_ns: int | None = None
    timeout_ns: int | None = None
    retries: int | None = None
    start_period_ns: int | None = None


@dataclass(frozen=True)
class Dependency:
    condition: Condition = Condition.STARTED
    required: bool = True
    restart: bool = False  # restart this dependent when the dependency is recreated


@dataclass(frozen=True)
class ServiceHook:
    """A ``post_start`` or ``pre_stop`` command, run in the service's container (an exec)."""

    command: tuple[str, ...]
    user: str | None = None
    privileged: bool = False
    working_dir: str | None = None
    environment: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Build:
    """How a service's image is built from the revision (``build:``).

    ``context`` is an absolute directory inside the project directory; ``dockerfile`` is
    relative to it (or absolute, inside the project directory); ``dockerfile_inline`` replaces
    it. ``repository`` is what the image is named (``<project>-<service>``); ``tags`` are the
    further names it gets (``image:`` or ``<project>-<service>:latest``, and ``build.tags``).
    ``remote`` is a remote context (a git or tarball URL, as written) the Engine fetches
    itself; ``context`` is then that URL too, and nothing is read from the revision.
    """

    context: str
    repository: str
    dockerfile: str = "Dockerfile"
    dockerfile_inline: str | None = None
    args: tuple[tuple[str, str], ...] = ()
    target: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    network: str | None = None
    extra_hosts: tuple[str, ...] = ()
    shm_size: int | None = None
    no_cache: bool = False
    pull: bool = False
    cache_from: tuple[str, ...] = ()
    platform: str | None = None
    tags: tuple[str, ...] = ()
    # BuildKit-only settings, kept so the plan shows them. The classic builder cannot do
    # ``refusals`` (one line each, naming the key: secrets, ssh, additional_contexts, several
    # platforms), so runtime.build refuses that build; it ignores cache_to, entitlements and
    # privileged (warned at load). ``secrets`` are the secrets' names, never their values.
    secrets: tuple[str, ...] = ()
    ssh: tuple[str, ...] = ()
    additional_contexts: tuple[tuple[str, str], ...] = ()
    cache_to: tuple[str, ...] = ()
    entitlements: tuple[str, ...] = ()
    privileged: bool = False
    platforms: tuple[str, ...] = ()
    refusals: tuple[str, ...] = ()
    remote: str | None = None
    # Set by gitdock.runtime.build when it binds the image to its content: the content digest
    # (context, Dockerfile, arguments) and the git revision being deployed, when known.
    digest: str = ""
    revision: str | None = None


@dataclass(frozen=True)
class ServiceFile:
    """A config or secret the service sees as a file (Compose's non-Swarm semantics).

    With ``source`` the host file is bind-mounted read-only; otherwise ``content`` is copied
    into the container before it starts, owned by ``uid``:``gid`` with ``mode``. ``digest``
    is the SHA-256 of the content either way, so a content change recreates the container.
    """

    kind: str  # "configs" or "secrets": the Compose key that asked for it
    name: str  # the project-level config or secret key
    target: str  # absolute path in the container
    digest: str
    content: bytes | None = field(default=None, repr=False)
    source: str = ""
    mode: int = 0o444
    uid: str = "0"
    gid: str = "0"


@dataclass(frozen=True)
class Service:
    """One service of the project, normalised.

    ``environment`` maps names to values; a value of None means "defined without value"
    (passed through from the environment by Docker semantics: the entry is dropped).
    ``command``/``entrypoint`` are None when the image default applies, and an empty
    tuple when the spec explicitly resets them.
    """

    name: str
    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: tuple[tuple[str, str | None], ...] = ()
    # Environment names whose values came from a SOPS-encrypted file: the applied record
    # keeps only their digest, and drift reports show them redacted.
    secret_env: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[PortMapping, ...] = ()
    mounts: tuple[Mount, ...] = ()
    # Project network key -> attachment. Empty when network_mode is set.
    networks: tuple[tuple[str, NetworkAttachment], ...] = ()
    # "bridge", "host", "none", "service:NAME", "container:ID", or None for project networks.
    network_mode: str | None = None
    restart: str = "no"
    depends_on: tuple[tuple[str, Dependency], ...] = ()
    healthcheck: Healthcheck | None = None
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    container_name: str | None = None
    replicas: int = 1
    # Where the service is defined, for error messages.
    position: Position | None = field(default=None, compare=False, hash=False)
    # Further Compose settings (issue 3) as (Compose key, normalised value), sorted by key;
    # unset ones are absent. A key under deploy is its dotted path
    # ("deploy.resources.limits.memory"), so a plan names the key the user wrote.
    # gitdock.runtime.desired maps each to the Engine API.
    extra: tuple[tuple[str, Any], ...] = ()
    files: tuple[ServiceFile, ...] = ()
    stop_grace_period: int | None = None  # seconds; None is Docker's default (10)
    platform: str | None = None
    pull_policy: str = "missing"
    profiles: tuple[str, ...] = ()
    # Set when the image is built from the revision; ``image`` is then the content-addressed
    # tag once gitdock.runtime.build has bound it (``<project>-<service>:<digest prefix>``).
    build: Build | None = None
    update_config: UpdateConfig | None = None  # how to replace its containers (unhashed)
    # Run after each start of a container / before gitdock stops one; hashed only when set.
    post_start: tuple[ServiceHook, ...] = ()
    pre_stop: tuple[ServiceHook, ...] = ()


@dataclass(frozen=True)
class Network:
    """A project-level network. ``name`` is the Docker name (``<project>_<key>`` unless set)."""

    key: str
    name: str
    driver: str = "bridge"
    internal: bool = False
    subnets: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    external: bool = False
    position: Position | None = field(default=None, compare=False, hash=False)
    # Issue 11: each hashed only when set (gitdock.runtime.desired.desired_network).
    driver_opts: tuple[tuple[str, str], ...] = ()
    enable_ipv6: bool = False
    ipam_driver: str | None = None
    ipam_options: tuple[tuple[str, str], ...] = ()
    # The IPAM pools in full, when any says more than its subnet (else ``subnets`` is enough).
    pools: tuple[IpamPool, ...] = ()


@dataclass(frozen=True)
class IpamPool:
    """One IPAM config entry of a network."""

    subnet: str | None = None
    ip_range: str | None = None
    gateway: str | None = None
    aux_addresses: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Volume:
    """A project-level named volume. ``name`` is the Docker name (``<project>_<key>`` unless set)."""

    key: str
    name: str
    driver: str = "local"
    driver_opts: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    external: bool = False
    position: Position | None = field(default=None, compare=False, hash=False)


@dataclass(frozen=True)
class Project:
    """A whole Compose project: what gitdock converges a Docker host to."""

    name: str
    services: tuple[Service, ...]
    networks: tuple[Network, ...] = ()
    volumes: tuple[Volume, ...] = ()
    working_dir: str = "."
    config_files: tuple[str, ...] = ()

    def service(self, name: str) -> Service:
        for svc in self.services:
            if svc.name == name:
                return svc
        raise KeyError(name)

    def network(self, key: str) -> Network:
        for net in self.networks:
            if net.key == key:
                return net
        raise KeyError(key)

    def volume(self, key: str) -> Volume:
        for vol in self.volumes:
            if vol.key == key:
                return vol
        raise KeyError(key)
