"""Validation of one merged Compose document: its keys, then its types.

Passes 1 and 2 of ``checks.check_compose``, each collecting every problem instead of
stopping at the first:

1. ``check_keys`` walks the raw data beside the models of ``schema.py``, drops ``x-*``
   extensions, drops the keys that have no effect on this target with a warning saying why
   (``NO_EFFECT``), and reports refused keys with their reason apart from keys that are not
   Compose at all (with a "did you mean").
2. ``validate_compose`` runs the pydantic models and turns their errors into
   ``SpecProblem``s with field paths and file positions.

Pass 3 (what no single field can say: references, conflicts, cycles) is ``checks.py``.

This module is pure.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import ValidationError

from gitdock.specs.errors import SpecProblem
from gitdock.specs.schema import (
    BUILD_MESSAGE,
    ComposeFile,
    ConfigSpec,
    NetworkSpec,
    SecretSpec,
    ServiceSpec,
    SpecModel,
    VolumeSpec,
    closest_match,
    describe_value,
)
from gitdock.specs.yamlpos import Document, Path, format_path

# --- pass 1: keys -----------------------------------------------------------------------


def check_keys(data: Any, doc: Document) -> tuple[Any, list[SpecProblem], list[str]]:
    """Drop ``x-*`` extensions, drop (with a warning) keys without effect on this target,
    and report (and drop) keys gitdock refuses or does not know.

    Returns a cleaned copy of ``data`` for validation, the problems and the warnings;
    ``data`` itself is untouched.
    """
    problems: list[SpecProblem] = []
    warnings: list[str] = []
    return _strip(data, ComposeFile, (), doc, (problems, warnings)), problems, warnings


Found = tuple[list[SpecProblem], list[str]]  # (problems, warnings) collected by _strip


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _fits(tp: Any, value: Any) -> bool:
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        # A union inside an Optional (``ServiceNetworks | None``): any member may fit.
        return any(_fits(member, value) for member in get_args(tp))
    if isinstance(value, dict):
        return origin is dict or (isinstance(tp, type) and issubclass(tp, SpecModel))
    if isinstance(value, list):
        return origin in (list, tuple)
    return False


def _strip(value: Any, tp: Any, path: Path, doc: Document, found: Found) -> Any:
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        member = next((m for m in get_args(tp) if _fits(m, value)), None)
        return value if member is None else _strip(value, member, path, doc, found)
    if isinstance(tp, type) and issubclass(tp, SpecModel):
        return _strip_model(value, tp, path, doc, found) if isinstance(value, dict) else value
    if origin in (list, tuple) and isinstance(value, list):
        (item_tp, *_) = get_args(tp)
        return [_strip(v, item_tp, (*path, i), doc, found) for i, v in enumerate(value)]
    if origin is dict and isinstance(value, dict):
        _, item_tp = get_args(tp)
        return {k: _strip(v, item_tp, (*path, k), doc, found) for k, v in value.items()}
    return value


def _strip_model(value: dict[str, Any], tp: type[SpecModel], path: Path, doc: Document, found: Found) -> Any:
    problems, warnings = found
    out: dict[str, Any] = {}
    fields = tp.model_fields
    for key, item in value.items():
        if not isinstance(key, str) or key.startswith("x-"):
            continue
        child = (*path, key)
        if key in tp.REFUSED:
            message = tp.REFUSED[key]
        elif key in fields:
            out[key] = _strip(item, fields[key].annotation, child, doc, found)
            continue
        elif key in tp.NO_EFFECT:
            warnings.append(f"{format_path(child)} {tp.NO_EFFECT[key]}")
            continue
        elif key == "build" and tp is ServiceSpec:
            message = BUILD_MESSAGE
        elif key in tp.UNSUPPORTED:
            message = f"`{key}` is not supported yet"
        else:
            message = f"unknown key `{key}`"
            close = closest_match(key, [*fields, *tp.UNSUPPORTED, *tp.NO_EFFECT])
            if close:
                message += f", did you mean `{close}`?"
        problems.append(SpecProblem(message, format_path(child), doc.locate(child, prefer_key=True)))
    return out


@dataclass
class Validated:
    """What validation produced: every part that is valid, even when others are not."""

    name: str | None = None
    services: dict[str, ServiceSpec] = field(default_factory=dict)
    networks: dict[str, NetworkSpec] = field(default_factory=dict)
    volumes: dict[str, VolumeSpec] = field(default_factory=dict)
    # Every key declared, valid or not, so references to invalid parts are not "undefined".
    service_names: tuple[str, ...] = ()
    network_keys: tuple[str, ...] = ()
    volume_keys: tuple[str, ...] = ()
    configs: dict[str, ConfigSpec] = field(default_factory=dict)
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    config_keys: tuple[str, ...] = ()
    secret_keys: tuple[str, ...] = ()
    # Settings accepted without effect on this target, each with its reason (check_keys).
    warnings: list[str] = field(default_factory=list)


def validate_compose(data: Any, doc: Document) -> tuple[Validated, list[SpecProblem]]:
    """Validate cleaned data (see ``check_keys``); problems carry paths and positions."""
    if not isinstance(data, dict):
        pos = doc.locate(())
        return Validated(), [
            SpecProblem(f"a Compose file must be a mapping, got {describe_value(data)}", "", pos)
        ]
    try:
        top = ComposeFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        return _validate_parts(data, errors), [_to_problem(err, data, doc) for err in errors]
    return (
        Validated(
            top.name,
            dict(top.services),
            {k: v or NetworkSpec() for k, v in top.networks.items()},
            {k: v or VolumeSpec() for k, v in top.volumes.items()},
            tuple(top.services),
            tuple(top.networks),
            tuple(top.volumes),
            dict(top.configs),
            dict(top.secrets),
            tuple(top.configs),
            tuple(top.secrets),
        ),
        [],
    )


def _section(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _validate_parts(data: dict[str, Any], errors: list[Any]) -> Validated:
    """After a failed whole-file validation, keep what is valid on its own.

    A service with bad fields is kept without them, so the semantic checks still see its
    other fields (its depends_on, networks, volumes); the result is never normalised.
    """
    bad_fields: dict[str, set[str | int]] = {}
    for err in errors:
        loc = err["loc"]
        if len(loc) > 2 and loc[0] == "services":
            bad_fields.setdefault(loc[1], set()).add(loc[2])
    out = Validated(
        service_names=tuple(_section(data, "services")),
        network_keys=tuple(_section(data, "networks")),
        volume_keys=tuple(_section(data, "volumes")),
        config_keys=tuple(_section(data, "configs")),
        secret_keys=tuple(_section(data, "secrets")),
    )
    name = data.get("name")
    out.name = name if isinstance(name, str) else None
    for key, raw in _section(data, "services").items():
        if not isinstance(raw, dict):
            continue
        kept = {k: v for k, v in raw.items() if k not in bad_fields.get(key, ())}
        kept.setdefault("image", "gitdock-placeholder")  # a valid reference; never normalised
        with contextlib.suppress(ValidationError):
            out.services[key] = ServiceSpec.model_validate(kept)
    for key, raw in _section(data, "networks").items():
        with contextlib.suppress(ValidationError):
            out.networks[key] = NetworkSpec.model_validate(raw or {})
    for key, raw in _section(data, "volumes").items():
        with contextlib.suppress(ValidationError):
            out.volumes[key] = VolumeSpec.model_validate(raw or {})
    for key, raw in _section(data, "configs").items():
        with contextlib.suppress(ValidationError):
            out.configs[key] = ConfigSpec.model_validate(raw or {})
    for key, raw in _section(data, "secrets").items():
        with contextlib.suppress(ValidationError):
            out.secrets[key] = SecretSpec.model_validate(raw or {})
    return out


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _has_child(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _to_problem(err: Any, data: Any, doc: Document) -> SpecProblem:
    loc: tuple[str | int, ...] = err["loc"]
    kind: str = err["type"]
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if _has_child(node, part):
            node = node[part]
            path.append(part)
        elif kind == "missing" and i == len(loc) - 1:
            path.append(part)
        # Anything else is a union tag or a pydantic-internal step; not part of the field path.
    where = tuple(path)
    if kind == "missing":
        parent = where[:-1]
        return SpecProblem(
            f"`{where[-1]}` is required", format_path(where), doc.locate(parent, prefer_key=True)
        )
    position = doc.locate(where)
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "spec":
        message = str(ctx.get("message", err["msg"]))
    elif kind == "wrong_type":
        message = f"{err['msg']}, got {describe_value(value)}"
    elif kind in _TYPE_NAMES:
        message = f"expected {_TYPE_NAMES[kind]}, got {describe_value(value)}"
    elif kind in ("literal_error", "enum"):
        message = f"expected {ctx.get('expected')}, got {describe_value(value)}"
    elif kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bound = next(iter(ctx.values()), "")
        op = {"greater_than_equal": ">=", "less_than_equal": "<=", "greater_than": ">", "less_than": "<"}[
            kind
        ]
        shown = str(value) if len(str(value)) <= 40 else str(value)[:37] + "..."
        message = f"must be {op} {bound}, got {shown}"
    elif kind == "extra_forbidden":
        message = f"unknown key `{where[-1] if where else ''}`"
    else:
        message = str(err["msg"])
    return SpecProblem(message, format_path(where), position)
