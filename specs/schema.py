"""The Compose file as pydantic models, with the short-syntax parsers they validate through.

Every model mirrors one level of the Compose Specification. Keys a plain Docker host can honour
are fields; ``NO_EFFECT`` names the keys the Specification defines there that are accepted and
have no effect on this target (``validate.check_keys`` drops them with a warning saying why),
and ``REFUSED`` the few that are refused, each with its reason. Short syntaxes
(``"8080:80"``, ``"data:/var/lib:ro"``, ``"/dev/x:/dev/y:rw"``) are parsed while validating,
so every problem is found before normalisation. Below the models: small questions asked of a
validated service (its dependencies, its config and secret targets, its resource settings)
that the checks and the normaliser share, and how messages name values and suggest names.

Numbers are bounded as the Engine reads them: integers fit in 64 bits (a boolean is not a
number), floats are finite, sizes and durations are not negative and do not overflow, a
service has at most ``MAX_REPLICAS`` replicas, and a command is at most ``MAX_COMMAND_BYTES``.

This module is pure.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import shlex
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StrictStr,
    Tag,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gitdock.specs.model import Condition, PortMapping
from gitdock.specs.reference import parse_reference

# Every service key of the Compose Specification (compose-spec schema, 2025). A word list
# reads better than 90 quoted strings, hence the noqa.
COMPOSE_SERVICE_KEYS = frozenset(
    """annotations attach blkio_config build cap_add cap_drop cgroup cgroup_parent command configs
    container_name cpu_count cpu_percent cpu_period cpu_quota cpu_rt_period cpu_rt_runtime
    cpu_shares cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices
    dns dns_opt dns_search domainname entrypoint env_file environment expose extends
    external_links extra_hosts gpus group_add healthcheck hostname image init ipc isolation
    label_file labels links logging mac_address mem_limit mem_reservation mem_swappiness
    memswap_limit models network_mode networks oom_kill_disable oom_score_adj pid pids_limit
    platform ports post_start pre_stop privileged profiles provider pull_policy
    pull_refresh_after read_only restart runtime scale secrets security_opt shm_size stdin_open
    stop_grace_period stop_signal storage_opt sysctls tmpfs tty ulimits use_api_socket user
    userns_mode uts volumes volumes_from working_dir""".split()  # noqa: SIM905
)

BUILD_MESSAGE = "build is not supported: gitdock deploys images, it does not build them; set image:"

NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_RESTART_RE = re.compile(r"no|always|unless-stopped|on-failure(?::[0-9]+)?")
_DURATION_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
}
_BYTES_RE = re.compile(r"([0-9]{1,20}(?:\.[0-9]{1,20})?)\s*([kmgtp]?)(?:i?b)?", re.IGNORECASE)
INT64_MAX = 2**63 - 1
MAX_REPLICAS = 1000  # per service: a typo (1000000000) is refused, not attempted
MAX_COMMAND_BYTES = 1 << 20  # Linux's ARG_MAX is 2 MiB, and shlex takes about 0.4 s for this much
_BYTE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}

# Tags of the discriminated unions below. Angle brackets keep them apart from data keys
# when error locations are mapped back onto the document.
_MAPPING, _LIST, _SCALAR = "<mapping>", "<list>", "<scalar>"


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("spec", "{message}", {"message": message})


def describe_value(value: Any) -> str:
    """Name a value's type the way messages say it: "a list", "the string "x""."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return _MAPPING
    if isinstance(value, list):
        return _LIST
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return _SCALAR
    return None


def _by_kind(expected: str) -> Discriminator:
    return Discriminator(_kind, custom_error_type="wrong_type", custom_error_message=expected)


class SpecModel(BaseModel):
    # defer_build: a model's validator is built on its first use, not at import. The loader
    # validates through a few top-level models (a file, a service, a network, ...), whose
    # schemas take the nested ones in; built at import, each of the forty would also get a
    # validator of its own that nothing calls — most of what importing this module cost.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, defer_build=True)

    # Keys of the Compose Specification at this level that are accepted and have no effect on
    # a plain Docker host: key -> why (the load warns with it).
    NO_EFFECT: ClassVar[dict[str, str]] = {}
    # Keys of the Compose Specification at this level that are refused: key -> why.
    REFUSED: ClassVar[dict[str, str]] = {}
    # Keys of the Compose Specification at this level that are not supported yet.
    UNSUPPORTED: ClassVar[frozenset[str]] = frozenset()


SWARM_ONLY = "has no effect on a plain Docker host (Swarm only)"


# --- scalar parsers -------------------------------------------------------------------


def parse_duration(value: Any) -> int:
    """A Compose duration ("1m30s", "10s", "500ms") in nanoseconds."""
    if not isinstance(value, str):
        raise _fail(f"expected a duration like 10s or 1m30s, got {describe_value(value)}")
    if value == "0":
        return 0
    pos, total = 0, 0.0
    for m in _DURATION_PART_RE.finditer(value):
        if m.start() != pos or len(m.group(1)) > 20:
            break
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos != len(value) or not value:
        raise _fail(f'"{_shorten(value)}" is not a duration (expected something like 10s or 1m30s)')
    if total > INT64_MAX:
        raise _fail(f'"{_shorten(value)}" is too long a duration (at most about 292 years)')
    return round(total)


def parse_bytes(value: Any) -> int:
    """A size in bytes: an integer, or "64m"-style with binary units as Docker reads them.

    May be negative (``memswap_limit: -1`` is unlimited); ``parse_size`` refuses that.
    """
    size: int | float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (m := _BYTES_RE.fullmatch(value.strip())):
        size = float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()]
    if size is None:
        raise _fail(f"expected a size like 64m, got {describe_value(value)}")
    if abs(size) > INT64_MAX:
        raise _fail(f"{_shorten(str(value))} is too large a size (at most 8 EiB)")
    return int(size)


def parse_size(value: Any) -> int:
    """Like ``parse_bytes``, but a negative size is a problem (``mem_limit: -1``)."""
    size = parse_bytes(value)
    if size < 0:
        raise _fail(f"a size cannot be negative, got {value}")
    return size


def parse_swap(value: Any) -> int:
    """``memswap_limit``: a size, or -1 for unlimited swap (Docker's reading)."""
    size = parse_bytes(value)
    if size < -1:
        raise _fail(f"a size cannot be negative (-1 is unlimited), got {value}")
    return size


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refuse_bool(value: Any) -> Any:
    """pydantic reads ``true`` as 1 for an int field; Compose does not."""
    if isinstance(value, bool):
        raise _fail("expected a number, got a boolean")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(f"expected a number, got {value}")
    return value


# Every integer field: a number that fits in 64 bits, never a boolean.
Int = Annotated[int, BeforeValidator(_refuse_bool), Field(ge=-INT64_MAX - 1, le=INT64_MAX)]
Replicas = Annotated[int, BeforeValidator(_refuse_bool), Field(ge=0, le=MAX_REPLICAS)]


def parse_microseconds(value: Any) -> int:
    """cpu_rt_period/cpu_rt_runtime: microseconds as a number, or a duration ("10ms")."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return parse_duration(value) // 1000


def _device_count(value: Any) -> Any:
    """A device request's count: a number, or "all" (Compose's -1)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _file_mode(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    elif isinstance(value, str) and re.fullmatch(r"0?[0-7]{1,4}|0o[0-7]{1,4}", value):
        mode = int(value.removeprefix("0o"), 8)
    else:
        raise _fail(f"expected a file mode like 0440, got {describe_value(value)}")
    if not 0 <= mode <= 0o7777:
        raise _fail(f"{value} is not a file mode")
    return mode


FileMode = Annotated[int, PlainValidator(_file_mode)]


def _parse_command(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str | list) and sum(len(str(v)) for v in value) > MAX_COMMAND_BYTES:
        raise _fail(f"longer than {MAX_COMMAND_BYTES >> 20} MiB, more than a process can be started with")
    if isinstance(value, str):
        try:
            return tuple(shlex.split(value))
        except ValueError as exc:
            raise _fail(f'cannot split "{_shorten(value)}" into arguments: {exc}') from exc
    if isinstance(value, list):
        if all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value):
            return tuple(str(v) for v in value)
        raise _fail("expected a list of strings")
    raise _fail(f"expected a string or a list of strings, got {describe_value(value)}")


def _scalar_to_str(value: Any) -> Any:
    """Environment and label values: booleans and numbers become strings, as in Compose."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_port_number(text: str, original: str) -> tuple[int, int]:
    """Parse "80" or "8080-8081" into an inclusive range."""
    low, sep, high = text.partition("-")
    if not _is_port_text(low) or (sep and not _is_port_text(high)):
        raise _fail(f'"{original}" is not a port mapping')
    start, end = int(low), int(high) if sep else int(low)
    if not (0 < start <= end <= 65535):
        raise _fail(f'"{original}" is not a port mapping: ports are 1-65535')
    return start, end


def _is_port_text(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5


def check_expose(value: str) -> str:
    """``expose``: "80", "8000-8010", "53/udp", ports 1-65535."""
    rest, slash, protocol = value.partition("/")
    if slash and protocol not in ("tcp", "udp", "sctp"):
        raise _fail(f'"{_shorten(value)}" is not a port: unknown protocol "{_shorten(protocol, 20)}"')
    _check_port_number(rest, _shorten(value))
    return value


def _check_ip(text: str, original: str) -> str:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise _fail(f'"{original}" is not a port mapping: "{text}" is not an IP address') from None
    return text


def parse_port(value: Any) -> tuple[PortMapping, ...]:
    """Short port syntax: "80", "8080:80", "127.0.0.1:8080:80", "8080-8081:80-81", "80/udp",
    "[::1]:80:80". A container port range becomes one mapping per port."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _fail(f"expected a port string or a mapping, got {describe_value(value)}")
    original = value
    rest, slash, protocol = value.partition("/")
    if not slash:
        protocol = "tcp"
    elif protocol not in ("tcp", "udp", "sctp"):
        raise _fail(f'"{original}" is not a port mapping: unknown protocol "{protocol}"')
    host_ip = ""
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0 or rest[close + 1 : close + 2] != ":":
            raise _fail(f'"{original}" is not a port mapping')
        host_ip = _check_ip(rest[1:close], original)
        parts = rest[close + 2 :].split(":")
        if len(parts) != 2:
            raise _fail(f'"{original}" is not a port mapping')
        published, target = parts
    else:
        parts = rest.split(":")
        if len(parts) == 1:
            published, target = "", parts[0]
        elif len(parts) == 2:
            published, target = parts
        elif len(parts) == 3:
            host_ip = _check_ip(parts[0], original)
            published, target = parts[1], parts[2]
        else:
            raise _fail(f'"{original}" is not a port mapping')
    t_start, t_end = _check_port_number(target, original)
    if not published:
        return tuple(PortMapping(p, None, host_ip, protocol) for p in range(t_start, t_end + 1))
    p_start, p_end = _check_port_number(published, original)
    if t_start == t_end:
        return (PortMapping(t_start, published, host_ip, protocol),)
    if p_end - p_start != t_end - t_start:
        raise _fail(f'"{original}" is not a port mapping: the port ranges differ in length')
    return tuple(
        PortMapping(t, str(p_start + i), host_ip, protocol) for i, t in enumerate(range(t_start, t_end + 1))
    )


def _check_published(value: str | None) -> str | None:
    if value is not None and value != "":
        _check_port_number(value, value)
    return value or None


def _check_restart(value: str) -> str:
    if not _RESTART_RE.fullmatch(value):
        raise _fail(f'"{value}" is not a restart policy (no, always, on-failure[:N], unless-stopped)')
    return value


def _check_network_mode(value: str) -> str:
    kind, sep, target = value.partition(":")
    if (not sep and value in ("bridge", "host", "none")) or (
        sep and kind in ("service", "container") and target
    ):
        return value
    raise _fail(f'"{value}" is not a network mode (bridge, host, none, service:NAME, container:NAME)')


def _check_ipv4(value: str | None) -> str | None:
    if value is not None:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise _fail(f'"{value}" is not an IPv4 address') from None
    return value


def _check_ipv6(value: str | None) -> str | None:
    if value is not None:
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            raise _fail(f'"{value}" is not an IPv6 address') from None
    return value


def _check_subnet(value: str | None) -> str | None:
    if value is not None:
        try:
            ipaddress.ip_network(value)
        except ValueError:
            raise _fail(f'"{value}" is not a subnet in CIDR notation') from None
    return value


def _check_ip_value(value: str | None) -> str | None:
    if value is not None:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise _fail(f'"{value}" is not an IP address') from None
    return value


def _check_name(value: str | None) -> str | None:
    if value is not None and not NAME_RE.fullmatch(value):
        raise _fail(f'"{value}" is not a valid name (letters, digits, "_", "." and "-")')
    return value


# --- service-level models ---------------------------------------------------------------

Command = Annotated[tuple[str, ...] | None, PlainValidator(_parse_command)]
Duration = Annotated[int, PlainValidator(parse_duration)]
ByteSize = Annotated[int, PlainValidator(parse_size)]
SwapSize = Annotated[int, PlainValidator(parse_swap)]
EnvValue = Annotated[str | None, BeforeValidator(_scalar_to_str)]
# environment/labels: a mapping, or a list of "KEY=VALUE" / "KEY" strings.
KeyValues = Annotated[
    Annotated[dict[str, EnvValue], Tag(_MAPPING)] | Annotated[list[str], Tag(_LIST)],
    _by_kind("expected a mapping or a list of KEY=VALUE strings"),
]


def parse_tmpfs(value: str) -> tuple[str, int | None]:
    """Service-level tmpfs entry "/run" or "/run:size=64m" -> (target, size in bytes)."""
    target, _, options = value.partition(":")
    if not target.startswith("/"):
        raise _fail(f'tmpfs target "{target}" must be an absolute path')
    size: Int | None = None
    for option in filter(None, options.split(",")):
        key, _, arg = option.partition("=")
        if key != "size":
            raise _fail(f'tmpfs option "{key}" is not supported yet')
        size = parse_bytes(arg)
    return target, size


def _check_tmpfs(value: str) -> str:
    parse_tmpfs(value)
    return value


TmpfsEntry = Annotated[str, AfterValidator(_check_tmpfs)]
TmpfsSpec = Annotated[
    Annotated[TmpfsEntry, Tag(_SCALAR)] | Annotated[list[TmpfsEntry], Tag(_LIST)],
    _by_kind("expected a path or a list of paths"),
]


class PortLong(SpecModel):
    name: str | None = None  # a label for people; the Engine has no field for it (nor Compose)
    app_protocol: str | None = None  # likewise
    target: Int = Field(ge=1, le=65535)
    published: Annotated[str | None, AfterValidator(_check_published)] = None
    host_ip: str = ""
    protocol: Literal["tcp", "udp", "sctp"] = "tcp"
    mode: Literal["ingress", "host"] = "ingress"

    @model_validator(mode="after")
    def _check_host_ip(self) -> PortLong:
        if self.host_ip:
            try:
                ipaddress.ip_address(self.host_ip)
            except ValueError:
                raise _fail(f'host_ip "{self.host_ip}" is not an IP address') from None
        return self


ShortPort = Annotated[tuple[PortMapping, ...], PlainValidator(parse_port)]
PortEntry = Annotated[
    Annotated[PortLong, Tag(_MAPPING)] | Annotated[ShortPort, Tag(_SCALAR)],
    _by_kind("expected a port string or a mapping"),
]


Propagation = Literal["shared", "slave", "private", "rshared", "rslave", "rprivate"]


class BindOptions(SpecModel):
    create_host_path: bool = True
    propagation: Propagation | None = None
    selinux: Literal["z", "Z"] | None = None
    # enabled is Docker's default; disabled is BindOptions.NonRecursive (API 1.40);
    # writable and readonly need API 1.44 (see desired: the load warns).
    recursive: Literal["enabled", "disabled", "writable", "readonly"] | None = None


class TmpfsOptions(SpecModel):
    size: Annotated[int, PlainValidator(parse_size)] | None = None
    mode: FileMode | None = None


class VolumeOptions(SpecModel):
    REFUSED = {
        "subpath": "volume.subpath needs Docker Engine API 1.45; gitdock creates containers with the "
        "API 1.41 subset, and mounting the whole volume instead would show the container other data"
    }

    labels: KeyValues | None = None
    nocopy: bool = False


class ImageMountOptions(SpecModel):
    """``type: image`` options: the image's directory to mount (Engine API 1.48's ImageOptions)."""

    subpath: str | None = None


_VOLUME_TYPE_REASONS = {
    "npipe": "volume type npipe is a Windows named pipe; it does not exist on a Linux Docker host",
    "cluster": "volume type cluster is a Swarm cluster volume; a plain Docker host has none",
}


def _check_volume_type(value: str) -> str:
    if value in ("volume", "bind", "tmpfs", "image"):
        return value
    if value in _VOLUME_TYPE_REASONS:
        raise _fail(_VOLUME_TYPE_REASONS[value])
    raise _fail(f'"{value}" is not a volume type (volume, bind, tmpfs, image)')


class ServiceVolume(SpecModel):
    """One service mount, long syntax (short syntax is parsed into this too).

    ``type: image`` mounts an image's files (``source``; Engine API 1.48): it loads and plans,
    and apply refuses it on an older engine (``runtime.converge``)."""

    type: Annotated[str, AfterValidator(_check_volume_type)]
    source: str = ""
    target: str
    read_only: bool = False
    consistency: str | None = None  # macOS hints (cached, delegated); Linux has one consistency
    bind: BindOptions | None = None
    tmpfs: TmpfsOptions | None = None
    volume: VolumeOptions | None = None
    image: ImageMountOptions | None = None

    @model_validator(mode="after")
    def _check_combination(self) -> ServiceVolume:
        if not self.target.startswith("/"):
            raise _fail(f'target "{self.target}" must be an absolute path')
        if self.type == "bind" and not self.source:
            raise _fail("a bind mount needs a source")
        if self.type == "tmpfs" and self.source:
            raise _fail("a tmpfs mount has no source")
        if self.type == "volume" and self.source:
            _check_name(self.source)
        if self.bind is not None and self.type != "bind":
            raise _fail(f"bind options need type bind, not {self.type}")
        if self.tmpfs is not None and self.type != "tmpfs":
            raise _fail(f"tmpfs options need type tmpfs, not {self.type}")
        if self.volume is not None and self.type != "volume":
            raise _fail(f"volume options need type volume, not {self.type}")
        if self.image is not None and self.type != "image":
            raise _fail(f"image options need type image, not {self.type}")
        if self.type == "image" and not self.source:
            raise _fail("an image mount needs a source (the image)")
        return self


def is_path_source(source: str) -> bool:
    """Short syntax: a source that looks like a path is a bind mount, else a volume name."""
    return source.startswith((".", "/", "~"))


def parse_volume(value: Any) -> ServiceVolume:
    """Short volume syntax: "/path", "name:/path[:ro|rw]", "./rel:/path", "/abs:/path:ro"."""
    if not isinstance(value, str):
        raise _fail(f"expected a volume string or a mapping, got {describe_value(value)}")
    parts = value.split(":")
    if len(parts) > 3 or not all(parts):
        raise _fail(f'"{value}" is not a volume mapping (expected [SOURCE:]TARGET[:MODE])')
    if len(parts) == 1:
        source, target, mode = "", parts[0], ""
    else:
        source, target, mode = parts[0], parts[1], parts[2] if len(parts) == 3 else ""
    if not target.startswith("/"):
        raise _fail(f'"{value}" is not a volume mapping: the container path must be absolute')
    is_bind = bool(source) and is_path_source(source)
    read_only, bind, volume = _volume_modes(value, mode, is_bind=is_bind)
    if is_bind:
        return ServiceVolume(type="bind", source=source, target=target, read_only=read_only, bind=bind)
    if source and not NAME_RE.fullmatch(source):
        raise _fail(f'"{value}" is not a volume mapping: "{source}" is neither a path nor a volume name')
    return ServiceVolume(type="volume", source=source, target=target, read_only=read_only, volume=volume)


_PROPAGATIONS = ("shared", "slave", "private", "rshared", "rslave", "rprivate")


def _volume_modes(
    value: str, mode: str, *, is_bind: bool
) -> tuple[bool, BindOptions | None, VolumeOptions | None]:
    """The short syntax's MODE ("ro,z", "nocopy", "rshared") as read-only and long-syntax options."""
    read_only = False
    bind: dict[str, Any] = {}
    nocopy = False
    for option in filter(None, mode.split(",")):
        if option in ("ro", "rw"):
            read_only = option == "ro"
        elif option in ("consistent", "cached", "delegated"):
            continue  # macOS-only hints; no effect on Linux hosts
        elif option in ("z", "Z", *_PROPAGATIONS) and is_bind:
            bind["selinux" if option in ("z", "Z") else "propagation"] = option
        elif option in ("z", "Z"):
            continue  # relabelling a named volume: accepted as Compose does (no Mounts API option)
        elif option == "nocopy" and not is_bind:
            nocopy = True
        elif option in ("nocopy", *_PROPAGATIONS):
            kind = "volumes" if option == "nocopy" else "bind mounts"
            raise _fail(f'"{value}": volume option "{option}" applies to {kind} only')
        else:
            raise _fail(f'"{value}" is not a volume mapping: unknown mode "{option}"')
    return (
        read_only,
        BindOptions(**bind) if bind else None,
        VolumeOptions(nocopy=True) if nocopy else None,
    )


ShortVolume = Annotated[ServiceVolume, PlainValidator(parse_volume)]
VolumeEntry = Annotated[
    Annotated[ServiceVolume, Tag(_MAPPING)] | Annotated[ShortVolume, Tag(_SCALAR)],
    _by_kind("expected a volume string or a mapping"),
]


class EnvFileEntry(SpecModel):
    path: str
    required: bool = True
    # raw: every line is KEY=VALUE taken literally (no quotes, no interpolation).
    format: Literal["raw"] | None = None


EnvFiles = Annotated[
    Annotated[str, Tag(_SCALAR)]
    | Annotated[
        list[
            Annotated[
                Annotated[str, Tag(_SCALAR)] | Annotated[EnvFileEntry, Tag(_MAPPING)],
                _by_kind("expected a path or a mapping"),
            ]
        ],
        Tag(_LIST),
    ],
    _by_kind("expected a path or a list of paths"),
]


class ServiceNetwork(SpecModel):
    NO_EFFECT = {
        "gw_priority": "needs Docker Engine API 1.48; no effect with the API 1.41 subset gitdock uses",
        "interface_name": "needs Docker Engine API 1.49; no effect with the API 1.41 subset gitdock uses",
    }

    aliases: list[str] = []
    ipv4_address: Annotated[str | None, AfterValidator(_check_ipv4)] = None
    ipv6_address: Annotated[str | None, AfterValidator(_check_ipv6)] = None
    link_local_ips: list[str] = []
    mac_address: str | None = None
    driver_opts: dict[str, Annotated[str, BeforeValidator(_scalar_to_str)]] = {}
    priority: Int = 0  # networks are connected in descending priority, as in Compose


ServiceNetworks = Annotated[
    Annotated[list[str], Tag(_LIST)] | Annotated[dict[str, ServiceNetwork | None], Tag(_MAPPING)],
    _by_kind("expected a list of network names or a mapping"),
]


class DependsOn(SpecModel):
    condition: Condition = Condition.STARTED
    required: bool = True
    restart: bool = False  # restart the dependent when this dependency is recreated


DependsOnSpec = Annotated[
    Annotated[list[str], Tag(_LIST)] | Annotated[dict[str, DependsOn | None], Tag(_MAPPING)],
    _by_kind("expected a list of service names or a mapping"),
]


def _check_test_length(value: Any) -> Any:
    if isinstance(value, str | list) and sum(len(str(v)) for v in value) > MAX_COMMAND_BYTES:
        raise _fail(f"longer than {MAX_COMMAND_BYTES >> 20} MiB, more than a process can be started with")
    return value


HealthTest = Annotated[
    Annotated[str, Tag(_SCALAR)] | Annotated[list[str], Tag(_LIST)],
    _by_kind("expected a string or a list of strings"),
    BeforeValidator(_check_test_length),
]


class HealthcheckSpec(SpecModel):
    NO_EFFECT = {
        "start_interval": "needs Docker Engine API 1.44; no effect with the API 1.41 subset gitdock "
        "uses (the interval applies from the start)"
    }

    test: HealthTest | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    start_period: Duration | None = None
    retries: Int | None = Field(default=None, ge=0)
    disable: bool = False

    @model_validator(mode="after")
    def _check_test(self) -> HealthcheckSpec:
        if isinstance(self.test, list) and self.test and self.test[0] not in ("NONE", "CMD", "CMD-SHELL"):
            raise _fail(f'test must start with "CMD", "CMD-SHELL" or "NONE", not "{self.test[0]}"')
        return self


def _check_deploy_mode(value: str) -> str:
    if value not in ("replicated", "global"):
        raise _fail(f'"{value}" is not a deploy mode (replicated, global)')
    return value


def parse_cpus(value: Any) -> float:
    """A CPU count: 1.5, "0.5"."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**6:
        raise _fail(f"{_shorten(str(value))} is not a number of CPUs")
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise _fail(f'"{value}" is not a number of CPUs') from None
    else:
        raise _fail(f"expected a number of CPUs, got {describe_value(value)}")
    if not math.isfinite(number) or abs(number) > 1e6:
        raise _fail(f"{_shorten(str(value))} is not a number of CPUs")
    if number < 0:
        raise _fail(f"the number of CPUs must not be negative, got {value}")
    return number


Cpus = Annotated[float, PlainValidator(parse_cpus)]


class ResourceLimits(SpecModel):
    cpus: Cpus | None = None
    memory: ByteSize | None = None
    pids: Int | None = None


class DeviceRequest(SpecModel):
    """A device reservation (GPUs): the Engine's DeviceRequests entry."""

    capabilities: list[str] = []
    count: Annotated[int | Literal["all"], BeforeValidator(_device_count)] | None = None
    device_ids: list[str] = []
    driver: str | None = None
    options: KeyValues | None = None


class ResourceReservations(SpecModel):
    NO_EFFECT = {"generic_resources": SWARM_ONLY}

    cpus: Cpus | None = None  # no standalone-Docker equivalent: accepted, has no effect (as in Compose)
    memory: ByteSize | None = None
    devices: list[DeviceRequest] = []


class Resources(SpecModel):
    limits: ResourceLimits | None = None
    reservations: ResourceReservations | None = None


class RestartPolicySpec(SpecModel):
    condition: Literal["none", "on-failure", "any"] = "any"
    max_attempts: Int | None = Field(default=None, ge=0)
    delay: Duration | None = None  # Swarm only: accepted, has no effect on a plain Docker host
    window: Duration | None = None  # Swarm only, likewise


def _check_choice(*choices: str) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise _fail(f'"{value}" is not one of {", ".join(choices)}')
        return value

    return AfterValidator(check)


class UpdateConfigSpec(SpecModel):
    """How a service's containers are replaced; on a single host too (runtime.plan.containers)."""

    NO_EFFECT = {"max_failure_ratio": SWARM_ONLY}

    order: Annotated[str, _check_choice("stop-first", "start-first")] = "stop-first"
    parallelism: Int = Field(default=1, ge=0)
    delay: Duration | None = None
    failure_action: Annotated[str, _check_choice("pause", "continue", "rollback")] = "pause"
    monitor: Duration | None = None


class DeploySpec(SpecModel):
    NO_EFFECT = dict.fromkeys(("endpoint_mode", "labels", "placement", "rollback_config"), SWARM_ONLY)

    mode: Annotated[str, AfterValidator(_check_deploy_mode)] = "replicated"
    replicas: Replicas | None = None
    resources: Resources | None = None
    restart_policy: RestartPolicySpec | None = None
    update_config: UpdateConfigSpec | None = None


def _check_image(value: str) -> str:
    """An image reference by Docker's rules, or a bare image id (``sha256:…``, a rollback's pin)."""
    if _IMAGE_ID_RE.fullmatch(value):
        return value
    try:
        parse_reference(value)
    except ValueError as exc:
        raise _fail(_shorten(str(exc).removeprefix("image reference "), 200)) from None
    return value


_IMAGE_ID_RE = re.compile(r"sha256:[a-f0-9]{64}")


def _str_list(value: Any) -> Any:
    """A string or a list of strings (dns, dns_search, env_file-like fields) as a list."""
    return [value] if isinstance(value, str) else value


def _str_items(value: Any) -> Any:
    """List items that may be numbers (expose: [80], group_add: [1000]) as strings."""
    if isinstance(value, list):
        return [_scalar_to_str(v) for v in value]
    return value


StrList = Annotated[list[str], BeforeValidator(_str_list)]
LooseStrList = Annotated[list[str], BeforeValidator(_str_items)]


class Ulimit(SpecModel):
    soft: Int
    hard: Int


UlimitSpec = Annotated[
    Annotated[Int, Tag(_SCALAR)] | Annotated[Ulimit, Tag(_MAPPING)],
    _by_kind("expected a number or a mapping with soft and hard"),
]


class DeviceSpec(SpecModel):
    source: str
    target: str | None = None
    permissions: str = "rwm"


def parse_device(value: Any) -> DeviceSpec:
    """Short device syntax: "/dev/x", "/dev/x:/dev/y", "/dev/x:/dev/y:rw"."""
    if not isinstance(value, str):
        raise _fail(f"expected a device string or a mapping, got {describe_value(value)}")
    parts = value.split(":")
    if not parts[0].startswith("/"):
        raise _fail(f'"{value}" is not a device path; CDI device names are not supported yet')
    if len(parts) > 3:
        raise _fail(f'"{value}" is not a device mapping (HOST[:CONTAINER[:PERMISSIONS]])')
    perms = parts[2] if len(parts) == 3 else "rwm"
    if not perms or set(perms) - set("rwm"):
        raise _fail(f'"{value}": device permissions are a combination of r, w and m')
    return DeviceSpec(source=parts[0], target=parts[1] if len(parts) > 1 else None, permissions=perms)


DeviceEntry = Annotated[
    Annotated[DeviceSpec, Tag(_MAPPING)]
    | Annotated[Annotated[DeviceSpec, PlainValidator(parse_device)], Tag(_SCALAR)],
    _by_kind("expected a device string or a mapping"),
]


def _extra_hosts(value: Any) -> Any:
    """extra_hosts as a list of "host:ip" (short "host=ip"/"host:ip" or a mapping)."""
    if isinstance(value, dict):
        out = []
        for host, ips in value.items():
            for ip in ips if isinstance(ips, list) else [ips]:
                out.append(f"{host}:{ip}")
        return out
    if isinstance(value, list):
        out = []
        for entry in value:
            if not isinstance(entry, str):
                raise _fail(f'expected "HOST:IP" strings, got {describe_value(entry)}')
            host, sep, ips = entry.partition("=")
            if not sep:
                host, sep, ips = entry.partition(":")
            if not sep or not host or not ips:
                raise _fail(f'"{entry}" is not an extra host (HOST:IP or HOST=IP)')
            # "h=10.0.0.1,10.0.0.2": one entry per address, as in Compose.
            for ip in ips.split(","):
                ip = ip.strip().removeprefix("[").removesuffix("]")
                _check_ip_text(ip, entry)
                out.append(f"{host}:{ip}")
        return out
    raise _fail(f"expected a list of HOST:IP strings or a mapping, got {describe_value(value)}")


def _check_ip_text(ip: str, entry: str) -> None:
    if ip == "host-gateway":
        return
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        raise _fail(f'"{entry}": "{ip}" is not an IP address') from None


ExtraHosts = Annotated[list[str], PlainValidator(_extra_hosts)]


class LoggingSpec(SpecModel):
    driver: str | None = None
    options: dict[str, EnvValue] | None = None


def _check_pull_policy(value: str) -> str:
    if value in (
        "always",
        "never",
        "missing",
        "if_not_present",
        "refresh",
        "daily",
        "weekly",
    ) or re.fullmatch(r"every_[0-9a-z.]+", value):
        return value
    if value == "build":
        return value
    raise _fail(
        f'"{value}" is not a pull policy (always, never, missing, build, daily, weekly, every_<duration>)'
    )


def _check_shared_mode(value: str) -> str:
    if value.startswith("service:") and not value.removeprefix("service:"):
        raise _fail(f'"{value}" names no service (service:NAME)')
    return value


def shared_mode_service(value: str | None) -> str | None:
    """The service an ``ipc``/``pid``/``network_mode`` of ``service:NAME`` shares, or None."""
    if value is not None and value.startswith("service:"):
        return value.partition(":")[2]
    return None


class FileRef(SpecModel):
    """A service's long-syntax reference to a config or secret."""

    source: str
    target: str | None = None
    uid: Annotated[str | None, BeforeValidator(_scalar_to_str)] = None
    gid: Annotated[str | None, BeforeValidator(_scalar_to_str)] = None
    mode: FileMode | None = None

    @model_validator(mode="after")
    def _check_ids(self) -> FileRef:
        for what, value in (("uid", self.uid), ("gid", self.gid)):
            if value is not None and not value.isdigit():
                raise _fail(f'{what} "{value}" must be numeric')
        return self


FileRefEntry = Annotated[
    Annotated[str, Tag(_SCALAR)] | Annotated[FileRef, Tag(_MAPPING)],
    _by_kind("expected a name or a mapping with source"),
]


class BlkioLimit(SpecModel):
    path: str
    rate: ByteSize


class BlkioWeight(SpecModel):
    path: str
    weight: Int = Field(ge=10, le=1000)


class BlkioConfig(SpecModel):
    """Block IO limits: the Engine's Blkio* host config fields."""

    weight: Int | None = Field(default=None, ge=10, le=1000)
    weight_device: list[BlkioWeight] = []
    device_read_bps: list[BlkioLimit] = []
    device_read_iops: list[BlkioLimit] = []
    device_write_bps: list[BlkioLimit] = []
    device_write_iops: list[BlkioLimit] = []


GpusSpec = Annotated[
    Annotated[Literal["all"], Tag(_SCALAR)] | Annotated[list[DeviceRequest], Tag(_LIST)],
    _by_kind('expected "all" or a list of device requests'),
]


class ServiceHook(SpecModel):
    """A post_start or pre_stop command, run in the service's container."""

    command: Command
    user: str | None = None
    privileged: bool = False
    working_dir: str | None = None
    environment: KeyValues | None = None


class ProviderSpec(SpecModel):
    type: str
    options: dict[str, Any] = {}


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


LabelFiles = Annotated[list[str], BeforeValidator(_as_list)]


# build: keys only BuildKit implements that change what is built. The Engine API offers
# BuildKit only over its session protocol (gRPC over a hijacked connection), so gitdock builds
# with the classic builder: a document using them loads and plans, and the build step refuses
# it naming the key (as several platforms). BuildKit's cache_to (skipped) and entitlements /
# privileged (not granted) only warn.
BUILDKIT_BUILD_KEYS = ("additional_contexts", "secrets", "ssh")


class BuildSpec(SpecModel):
    """A service's ``build:`` in the long syntax; the short syntax is the context alone."""

    context: str = "."
    dockerfile: str | None = None
    dockerfile_inline: str | None = None
    args: KeyValues | None = None
    target: str | None = None
    labels: KeyValues | None = None
    network: str | None = None
    extra_hosts: ExtraHosts = []
    shm_size: ByteSize | None = None
    no_cache: bool | None = None
    pull: bool | None = None
    cache_from: list[str] = []
    tags: list[str] = []
    platforms: list[str] = []
    isolation: str | None = None  # Windows only: a warning
    provenance: bool | str | None = None  # attestations: BuildKit's, a warning
    sbom: bool | str | None = None
    ulimits: dict[str, Any] = {}  # not passed to the build yet: a warning
    # BuildKit only: kept in the model; BUILDKIT_BUILD_KEYS are refused by the build step.
    secrets: list[FileRefEntry] = []
    ssh: KeyValues | None = None
    cache_to: list[str] = []
    additional_contexts: KeyValues | None = None
    entitlements: list[str] = []
    privileged: bool | None = None


BuildEntry = Annotated[
    Annotated[str, Tag(_SCALAR)] | Annotated[BuildSpec, Tag(_MAPPING)],
    _by_kind("expected a context directory or a mapping with context"),
]


class ServiceSpec(SpecModel):
    NO_EFFECT = {
        "credential_spec": "is for Windows containers; it has no effect on a Linux Docker host",
        "develop": "is for docker compose watch; it has no effect on a deploy",
        "models": "needs Docker Model Runner, which gitdock does not drive; it has no effect on this target",
        "pull_refresh_after": "has no effect: gitdock pulls by pull_policy and digest",
    }

    image: Annotated[str, AfterValidator(_check_image)] | None = None
    build: BuildEntry | None = None
    command: Command = None
    entrypoint: Command = None
    environment: KeyValues | None = None
    env_file: EnvFiles | None = None
    labels: KeyValues | None = None
    ports: list[PortEntry] = []
    volumes: list[VolumeEntry] = []
    tmpfs: TmpfsSpec | None = None
    networks: ServiceNetworks | None = None
    network_mode: Annotated[str, AfterValidator(_check_network_mode)] | None = None
    restart: Annotated[str, AfterValidator(_check_restart)] = "no"
    depends_on: DependsOnSpec | None = None
    healthcheck: HealthcheckSpec | None = None
    user: str | None = None
    working_dir: str | None = None
    hostname: str | None = None
    container_name: Annotated[str | None, AfterValidator(_check_name)] = None
    scale: Replicas | None = None
    deploy: DeploySpec | None = None
    # --- further settings (issue 3): normalised into Service.extra ---
    annotations: KeyValues | None = None
    cap_add: list[str] = []
    cap_drop: list[str] = []
    cgroup: Literal["host", "private"] | None = None
    cgroup_parent: str | None = None
    cpu_period: Int | None = None
    cpu_quota: Int | None = None
    cpu_shares: Int | None = None
    cpus: Cpus | None = None
    cpuset: str | None = None
    device_cgroup_rules: list[str] = []
    devices: list[DeviceEntry] = []
    dns: StrList = []
    dns_opt: list[str] = []
    dns_search: StrList = []
    domainname: str | None = None
    expose: Annotated[list[Annotated[str, AfterValidator(check_expose)]], BeforeValidator(_str_items)] = []
    extra_hosts: ExtraHosts = []
    group_add: LooseStrList = []
    init: bool | None = None
    ipc: Annotated[str, AfterValidator(_check_shared_mode)] | None = None
    links: list[str] = []
    logging: LoggingSpec | None = None
    mac_address: str | None = None
    mem_limit: ByteSize | None = None
    mem_reservation: ByteSize | None = None
    mem_swappiness: Int | None = Field(default=None, ge=0, le=100)
    memswap_limit: SwapSize | None = None
    oom_kill_disable: bool | None = None
    oom_score_adj: Int | None = Field(default=None, ge=-1000, le=1000)
    pid: Annotated[str, AfterValidator(_check_shared_mode)] | None = None
    pids_limit: Int | None = None
    platform: str | None = None
    privileged: bool | None = None
    profiles: list[str] = []
    pull_policy: Annotated[str, AfterValidator(_check_pull_policy)] = "missing"
    read_only: bool | None = None
    runtime: str | None = None
    security_opt: list[str] = []
    shm_size: ByteSize | None = None
    stdin_open: bool | None = None
    stop_grace_period: Duration | None = None
    stop_signal: str | None = None
    storage_opt: dict[str, str] = {}
    sysctls: KeyValues | None = None
    tty: bool | None = None
    ulimits: dict[str, UlimitSpec] = {}
    userns_mode: str | None = None
    uts: str | None = None
    volumes_from: list[str] = []
    configs: list[FileRefEntry] = []
    secrets: list[FileRefEntry] = []
    # --- issue 11: the rest of the Specification ---
    attach: bool | None = None  # log attachment of `compose up`; gitdock never attaches
    blkio_config: BlkioConfig | None = None
    cpu_count: Int | None = Field(default=None, ge=0)
    cpu_percent: Int | None = Field(default=None, ge=0, le=100)
    cpu_rt_period: Annotated[int, PlainValidator(parse_microseconds)] | None = None
    cpu_rt_runtime: Annotated[int, PlainValidator(parse_microseconds)] | None = None
    external_links: list[str] = []
    gpus: GpusSpec | None = None
    isolation: str | None = None
    label_file: LabelFiles = []
    post_start: list[ServiceHook] = []
    pre_stop: list[ServiceHook] = []
    provider: ProviderSpec | None = None  # run by a Compose plugin: no image, no container here
    use_api_socket: bool | None = None

    @model_validator(mode="after")
    def _check_image_or_build(self) -> ServiceSpec:
        if self.image is None and self.build is None and self.provider is None:
            raise _fail("`image` or `build` is required")
        if self.pull_policy == "build" and self.build is None:
            raise _fail("pull_policy build needs build:")
        return self


ServiceSpec.UNSUPPORTED = frozenset(
    COMPOSE_SERVICE_KEYS - set(ServiceSpec.model_fields) - set(ServiceSpec.NO_EFFECT)
)


# --- top-level models ------------------------------------------------------------------


DriverOpts = dict[str, Annotated[str, BeforeValidator(_scalar_to_str)]]


class IpamConfig(SpecModel):
    subnet: Annotated[str | None, AfterValidator(_check_subnet)] = None
    ip_range: Annotated[str | None, AfterValidator(_check_subnet)] = None
    gateway: Annotated[str | None, AfterValidator(_check_ip_value)] = None
    aux_addresses: dict[str, Annotated[str, AfterValidator(_check_ip_value)]] = {}


class Ipam(SpecModel):
    driver: str | None = None
    config: list[IpamConfig] = []
    options: dict[str, str] = {}


class ExternalName(SpecModel):
    """The legacy ``external: {name: X}`` form (deprecated for ``name: X``)."""

    name: str | None = None


External = Annotated[
    Annotated[bool, Tag(_SCALAR)] | Annotated[ExternalName, Tag(_MAPPING)],
    Discriminator(
        lambda v: _MAPPING if isinstance(v, dict) else _SCALAR,
        custom_error_type="wrong_type",
        custom_error_message="expected true, false or a mapping with name",
    ),
]


def external_name(external: bool | ExternalName, name: str | None) -> str | None:
    """The Docker name of an external object: ``name``, or the legacy ``external.name``."""
    if isinstance(external, ExternalName) and external.name:
        return external.name
    return name


def _check_external_name(external: bool | ExternalName, name: str | None) -> None:
    if isinstance(external, ExternalName) and external.name and name and name != external.name:
        raise _fail(f"external.name ({external.name}) and name ({name}) disagree; set only name")


class NetworkSpec(SpecModel):
    driver: str | None = None
    driver_opts: DriverOpts = {}
    internal: bool = False
    attachable: bool | None = None  # gitdock's networks are always attachable
    enable_ipv4: bool | None = None
    enable_ipv6: bool | None = None
    ipam: Ipam | None = None
    labels: KeyValues | None = None
    external: External = False
    name: str | None = None

    @model_validator(mode="after")
    def _check_external(self) -> NetworkSpec:
        if self.external:
            conflicting = sorted(self.model_fields_set & {"driver", "driver_opts", "internal", "ipam"})
            if conflicting:
                raise _fail(f"an external network cannot set {', '.join(conflicting)}")
            _check_external_name(self.external, self.name)
        return self


class VolumeSpec(SpecModel):
    driver: str | None = None
    driver_opts: DriverOpts = {}
    labels: KeyValues | None = None
    external: External = False
    name: str | None = None

    @model_validator(mode="after")
    def _check_external(self) -> VolumeSpec:
        if self.external:
            conflicting = sorted(self.model_fields_set & {"driver", "driver_opts"})
            if conflicting:
                raise _fail(f"an external volume cannot set {', '.join(conflicting)}")
            _check_external_name(self.external, self.name)
        return self


class FileObjectSpec(SpecModel):
    """A top-level config or secret: exactly one of file, environment, content (configs only),
    or ``external`` (a Swarm object: accepted, and not mounted on a plain Docker host)."""

    NO_EFFECT = {
        "driver": SWARM_ONLY,
        "driver_opts": SWARM_ONLY,
        "template_driver": SWARM_ONLY,
    }
    KIND: ClassVar[str] = "config"

    file: str | None = None
    environment: str | None = None
    name: str | None = None
    external: External = False
    labels: KeyValues | None = None  # a file-backed config has no Docker object to label

    @model_validator(mode="after")
    def _check_source(self) -> FileObjectSpec:
        if self.external:
            return self
        given = sorted(self.model_fields_set & {"file", "environment", "content"})
        if len(given) != 1:
            sources = "file, environment or content" if self.KIND == "config" else "file or environment"
            found = f" (found {', '.join(given)})" if given else ""
            raise _fail(f"a {self.KIND} needs exactly one of {sources}{found}")
        return self


class SecretSpec(FileObjectSpec):
    KIND = "secret"


class ConfigSpec(FileObjectSpec):
    content: str | None = None


class ComposeFile(SpecModel):
    NO_EFFECT = {
        "models": "needs Docker Model Runner, which gitdock does not drive; it has no effect on this target",
        # docker/compose runs jobs on `compose run` or on the engine's schedule (pkg/e2e/jobs_test.go)
        "jobs": "run on `docker compose run` or on a schedule, not as deployed services; "
        "they have no effect on this target",
    }

    name: StrictStr | None = None
    version: str | None = None  # obsolete in the Compose Specification; accepted and ignored
    services: dict[str, ServiceSpec] = {}
    networks: dict[str, NetworkSpec | None] = {}
    volumes: dict[str, VolumeSpec | None] = {}
    configs: dict[str, ConfigSpec] = {}
    secrets: dict[str, SecretSpec] = {}


# --- questions asked of a validated service ---------------------------------------------


def service_dependencies(spec: ServiceSpec) -> dict[str, DependsOn]:
    """Declared dependencies, plus the implicit ones of ``network_mode: service:NAME``,
    ``volumes_from`` and ``links``."""
    deps: dict[str, DependsOn] = {}
    if isinstance(spec.depends_on, list):
        deps = dict.fromkeys(spec.depends_on, DependsOn())
    elif isinstance(spec.depends_on, dict):
        deps = {k: v or DependsOn() for k, v in spec.depends_on.items()}
    for mode in (spec.network_mode, spec.ipc, spec.pid):
        if (shared := shared_mode_service(mode)) is not None:
            deps.setdefault(shared, DependsOn())
    for target in volumes_from_services(spec):
        deps.setdefault(target, DependsOn())
    for link in spec.links:
        deps.setdefault(link.partition(":")[0], DependsOn())
    return deps


def volumes_from_services(spec: ServiceSpec) -> list[str]:
    """Services named by ``volumes_from`` (``container:NAME`` entries name containers)."""
    return [entry.split(":")[0] for entry in spec.volumes_from if not entry.startswith("container:")]


def file_ref(kind: str, entry: str | FileRef) -> tuple[str, str]:
    """(source, absolute target) of a service's config or secret reference."""
    source, target = (entry, None) if isinstance(entry, str) else (entry.source, entry.target)
    if kind == "secrets":
        if not target:
            return source, f"/run/secrets/{source}"
        return source, target if target.startswith("/") else f"/run/secrets/{target}"
    if not target:
        return source, f"/{source}"
    return source, target if target.startswith("/") else f"/{target}"


def service_network_keys(spec: ServiceSpec) -> list[str]:
    if spec.networks is None:
        return []
    return list(spec.networks)


# Resource settings Compose spells twice: a service key and its path under deploy.resources.
RESOURCE_KEYS = (
    ("mem_limit", "limits.memory"),
    ("cpus", "limits.cpus"),
    ("pids_limit", "limits.pids"),
    ("mem_reservation", "reservations.memory"),
)


def resource_settings(spec: ServiceSpec) -> list[tuple[str, Any, str, Any]]:
    """(service key, its value, path under deploy.resources, its value) per ``RESOURCE_KEYS``."""
    resources = spec.deploy.resources if spec.deploy else None
    out: list[tuple[str, Any, str, Any]] = []
    for key, path in RESOURCE_KEYS:
        section, _, name = path.partition(".")
        group = getattr(resources, section, None)
        out.append((key, getattr(spec, key), path, getattr(group, name, None)))
    return out


# --- how messages name things ------------------------------------------------------------


def closest_match(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like ``name`` (a likely typo), or None."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def suggest(name: str, candidates: Iterable[str]) -> str:
    """``", did you mean NAME?"`` for a likely typo of a candidate, else ""."""
    close = closest_match(name, candidates)
    return f", did you mean {close}?" if close else ""
