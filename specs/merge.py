"""The Compose Specification's merge rules, for several ``-f`` files and ``extends``.

Mappings merge key by key and sequences append, except: ``command``, ``entrypoint`` and
``healthcheck.test`` are replaced; ``environment``, ``labels``, ``annotations``,
``extra_hosts`` and ``sysctls`` merge by key whatever their syntax; ``ports``,
``volumes``, ``configs`` and ``secrets`` merge entries that share a unique key (the target,
or the whole mapping for ports); list fields such as ``dns`` or ``cap_add`` keep unique
values. ``!reset`` removes a value and ``!override`` replaces it wholesale.

Positions travel with the values (``yamlpos.PDict``/``PList``), so a problem in a merged
value still names the file and line it came from. Purely computational.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gitdock.specs.yamlpos import Override, PDict, PList, Reset

_REPLACED = frozenset({"command", "entrypoint"})
_BY_KEY = frozenset({"environment", "labels", "annotations", "extra_hosts", "sysctls"})
_UNIQUE_LISTS = frozenset(
    {
        "cap_add",
        "cap_drop",
        "device_cgroup_rules",
        "devices",
        "dns",
        "dns_opt",
        "dns_search",
        "env_file",
        "expose",
        "external_links",
        "group_add",
        "links",
        "profiles",
        "security_opt",
        "tmpfs",
        "volumes_from",
    }
)
_TO_MAPPING = frozenset({"depends_on", "networks"})


def merge_documents(base: Any, over: Any) -> Any:
    """Merge one whole Compose file over another; services follow the service rules."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    out = _copy(base)
    for key, value in over.items():
        if isinstance(value, Reset):
            out.pop(key, None)
        elif key == "services" and isinstance(value, dict) and isinstance(out.get(key), dict):
            services = _copy(out[key])
            for name, svc in value.items():
                if isinstance(svc, Reset):
                    services.pop(name, None)
                else:
                    _put(services, value, name, merge_service(services.get(name), svc))
            _put(out, over, key, services)
        else:
            _put(out, over, key, merge_values(out.get(key), value) if key in out else value)
    return out


def merge_service(base: Any, over: Any) -> Any:
    """Merge one service definition over another (``-f`` overrides and ``extends``)."""
    base = _unwrap(base)
    if isinstance(over, Override) or not (isinstance(base, dict) and isinstance(over, dict)):
        return over.value if isinstance(over, Override) else over
    out = _copy(base)
    for key, value in over.items():
        if isinstance(value, Reset):
            out.pop(key, None)
            continue
        old = _unwrap(out.get(key))
        if key not in out or old is None or isinstance(value, Override):
            _put(out, over, key, value)
            continue
        merged = _merge_field(key, old, value)
        _put(out, over, key, merged)
    return out


def _merge_field(key: str, old: Any, new: Any) -> Any:
    if key in _REPLACED:
        return new
    if key == "healthcheck" and isinstance(old, dict) and isinstance(new, dict):
        out = _copy(old)
        for k, v in new.items():
            _put(out, new, k, v if k == "test" or k not in out else merge_values(out[k], v))
        return out
    if key in _BY_KEY:
        return merge_values(_as_mapping(old, key), _as_mapping(new, key))
    if key in _TO_MAPPING:
        return _merge_maps_keep_base(_names_to_mapping(old), _names_to_mapping(new))
    if key in _UNIQUE_LISTS:
        return _append_unique(_as_list(old), _as_list(new), lambda v: repr(v))
    if key == "ports":
        return _append_unique(_as_list(old), _as_list(new), _port_key)
    if key in ("volumes", "configs", "secrets"):
        return _append_unique(_as_list(old), _as_list(new), _target_key(key), merge=True)
    return merge_values(old, new)


def merge_values(base: Any, over: Any) -> Any:
    """The generic rule: mappings key by key, sequences appended, anything else replaced."""
    base = _unwrap(base)
    if isinstance(over, Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        out = _copy(base)
        for key, value in over.items():
            if isinstance(value, Reset):
                out.pop(key, None)
            else:
                _put(out, over, key, merge_values(out[key], value) if key in out else value)
        return out
    if isinstance(base, list) and isinstance(over, list):
        return _concat(base, over)
    return over


def resolve_markers(value: Any) -> Any:
    """Drop ``!reset`` keys and unwrap ``!override`` values left after merging (in place)."""
    if isinstance(value, Override):
        return resolve_markers(value.value)
    if isinstance(value, dict):
        for key in list(value):
            item = value[key]
            if isinstance(item, Reset):
                del value[key]
            else:
                value[key] = resolve_markers(item)
    elif isinstance(value, list):
        keep = [i for i, item in enumerate(value) if not isinstance(item, Reset)]
        if len(keep) != len(value):
            positions = value.vpos if isinstance(value, PList) else []
            items = [value[i] for i in keep]
            value[:] = items
            if isinstance(value, PList):
                value.vpos = [positions[i] for i in keep]
        for i, item in enumerate(value):
            value[i] = resolve_markers(item)
    return value


# --- helpers ------------------------------------------------------------------------------


def _unwrap(value: Any) -> Any:
    if isinstance(value, Override):
        return value.value
    if isinstance(value, Reset):
        return None
    return value


def _copy(value: dict[str, Any]) -> PDict:
    out = PDict(value.pos if isinstance(value, PDict) else None)
    out.update(value)
    if isinstance(value, PDict):
        out.kpos.update(value.kpos)
        out.vpos.update(value.vpos)
    return out


def _put(out: PDict, source: Any, key: str, value: Any) -> None:
    """Set ``out[key]``, taking the key's and value's positions from ``source``."""
    out[key] = value
    if isinstance(source, PDict):
        if key in source.kpos:
            out.kpos[key] = source.kpos[key]
        if key in source.vpos:
            out.vpos[key] = source.vpos[key]


def _as_list(value: Any) -> PList:
    if isinstance(value, PList):
        return value
    out = PList()
    for item in value if isinstance(value, list) else [value]:
        out.add(item, None)
    return out


def _concat(base: list[Any], over: list[Any]) -> PList:
    out = PList(base.pos if isinstance(base, PList) else None)
    for source in (base, over):
        positions = source.vpos if isinstance(source, PList) else [None] * len(source)
        for item, pos in zip(source, positions, strict=False):
            out.add(item, pos)
    return out


def _append_unique(base: PList, over: PList, key_of: Callable[[Any], Any], *, merge: bool = False) -> PList:
    out = PList(base.pos)
    index: dict[Any, int] = {}
    for source in (base, over):
        for item, pos in zip(source, source.vpos, strict=False):
            key = key_of(item)
            if key in index:
                i = index[key]
                if merge and isinstance(out[i], dict) and isinstance(item, dict):
                    item = merge_values(out[i], item)
                out[i] = item
                out.vpos[i] = pos
            else:
                index[key] = len(out)
                out.add(item, pos)
    return out


def _port_key(entry: Any) -> Any:
    if isinstance(entry, dict):
        return tuple(str(entry.get(k, "")) for k in ("host_ip", "target", "published", "protocol"))
    return str(entry)


def _target_key(kind: str) -> Callable[[Any], Any]:
    def key(entry: Any) -> Any:
        if kind == "volumes":
            if isinstance(entry, str):
                parts = entry.split(":")
                return parts[1] if len(parts) > 1 else parts[0]
            return entry.get("target") if isinstance(entry, dict) else repr(entry)
        source, target = (
            (entry, None) if isinstance(entry, str) else (entry.get("source"), entry.get("target"))
        )
        if target:
            return target
        return f"/run/secrets/{source}" if kind == "secrets" else f"/{source}"

    return key


def _as_mapping(value: Any, key: str) -> Any:
    """``["A=1", "B"]`` (or ``["host:ip"]`` for extra_hosts) as a mapping, keeping positions."""
    if not isinstance(value, list):
        return value
    out = PDict(value.pos if isinstance(value, PList) else None)
    positions = value.vpos if isinstance(value, PList) else [None] * len(value)
    for item, pos in zip(value, positions, strict=False):
        if not isinstance(item, str):
            return value
        sep = "=" if key != "extra_hosts" or "=" in item else ":"
        name, has_value, rest = item.partition(sep)
        out.put(name, rest if has_value else None, pos, pos)
    return out


def _names_to_mapping(value: Any) -> Any:
    if not isinstance(value, list):
        return value
    out = PDict(value.pos if isinstance(value, PList) else None)
    positions = value.vpos if isinstance(value, PList) else [None] * len(value)
    for item, pos in zip(value, positions, strict=False):
        if isinstance(item, str):
            out.put(item, None, pos, pos)
    return out


def _merge_maps_keep_base(base: Any, over: Any) -> Any:
    """depends_on/networks: merged by name; ``name: null`` in an override keeps the base's entry."""
    if not (isinstance(base, dict) and isinstance(over, dict)):
        return over
    out = _copy(base)
    for key, value in over.items():
        if isinstance(value, Reset):
            out.pop(key, None)
        elif value is None and out.get(key) is not None:
            continue
        else:
            _put(out, over, key, merge_values(out[key], value) if out.get(key) is not None else value)
    return out
