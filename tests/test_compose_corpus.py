"""The Compose corpus: every key of the Compose Specification, loaded and planned.

The key list comes from the Specification's own JSON schema (a copy, with its source, in
``compose_corpus/compose-spec.json``), so a key added upstream shows up here as untested.
Each file in ``compose_corpus/valid`` must load and plan; each in ``compose_corpus/invalid``
must be refused with the problem its first line names (``# expect: ...``). The test prints
the share of the schema's keys the corpus covers, and how many are implemented, accepted with
a warning (no effect on a plain Docker host) or refused, with the reason for each refused one.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
import yaml

from gitdock.runtime.desired import desired_container, desired_network, desired_volume
from gitdock.runtime.observe import ObservedNetwork, ObservedState, ObservedVolume
from gitdock.runtime.plan import plan_project
from gitdock.specs import SpecError, load_project, load_project_with_warnings
from gitdock.specs import schema as compose_schema
from gitdock.specs.yamlpos import format_path

CORPUS = Path(__file__).resolve().parent / "compose_corpus"
SCHEMA = json.loads((CORPUS / "compose-spec.json").read_text())
VALID = sorted((CORPUS / "valid").glob("*.yaml"))
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))


def corpus_params(paths: list[Path]) -> list[Any]:
    return [pytest.param(p, id=p.name) for p in paths]


ENVIRON = {"HOME": "/root", "USER": "corpus"}

# Keys the reader consumes before validation (so they have no model field).
READER_KEYS = {"include", "services.*.extends"}
# build: is issue 11 part 1, built and tested with its own e2e tests (tests/test_build*.py).
BUILD = "services.*.build"

# --- the schema's keys -------------------------------------------------------------------


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def _alternatives(node: dict[str, Any]) -> list[dict[str, Any]]:
    node = _resolve(node)
    if "oneOf" in node:
        return [alt for option in node["oneOf"] for alt in _alternatives(option)]
    return [node]


def _children(node: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key part, schema) of what an object holds; "*" for a name pattern; arrays pass through."""
    for alt in _alternatives(node):
        if "items" in alt:
            yield from _children(alt["items"])
        for key, child in alt.get("properties", {}).items():
            yield key, child
        for pattern, child in alt.get("patternProperties", {}).items():
            if pattern != "^x-" and child:
                yield "*", child


def schema_keys(node: dict[str, Any] = SCHEMA, prefix: str = "", depth: int = 0) -> set[str]:
    """Every key path of the schema: ``services.*.deploy.placement.constraints``."""
    keys: set[str] = set()
    for key, child in _children(node):
        path = f"{prefix}.{key}" if prefix else key
        if key != "*":
            keys.add(path)
        if depth < 12 and not (key == "*" and prefix.endswith(("options", "driver_opts", "labels"))):
            keys |= schema_keys(child, path, depth + 1)
    return keys


def used_keys(
    data: Any, node: dict[str, Any] = SCHEMA, prefix: str = "", at: tuple[Any, ...] = ()
) -> Iterator[tuple[str, str]]:
    """(schema key path, concrete path) of every key the document uses."""
    if isinstance(data, list):
        for i, item in enumerate(data):
            yield from used_keys(item, node, prefix, (*at, i))
        return
    if not isinstance(data, dict):
        return
    children = list(_children(node))
    named = {k: c for k, c in children if k != "*"}
    pattern = next((c for k, c in children if k == "*"), None)
    for key, value in data.items():
        if not isinstance(key, str) or key.startswith("x-"):
            continue
        if key in named:
            path = f"{prefix}.{key}" if prefix else key
            yield path, format_path((*at, key))
            yield from used_keys(value, named[key], path, (*at, key))
        elif pattern is not None:
            yield from used_keys(value, pattern, f"{prefix}.*", (*at, key))


# --- what gitdock's models say of each key ----------------------------------------------


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _descend(tp: Any, part: str) -> tuple[str, Any]:
    """("model", type) to go on, or (status, reason) when the key is decided here."""
    tp = _unwrap(tp)
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        found = [_descend(m, part) for m in get_args(tp)]
        return next(
            (f for f in found if f[0] == "model"), next((f for f in found if f[0] != "value"), found[0])
        )
    if origin in (list, tuple):
        return _descend(get_args(tp)[0], part)
    if origin is dict:
        return ("model", get_args(tp)[1]) if part == "*" else ("value", "")
    if isinstance(tp, type) and issubclass(tp, compose_schema.SpecModel):
        if part in tp.REFUSED:
            return "refused", tp.REFUSED[part]
        if part in tp.NO_EFFECT:
            return "warned", tp.NO_EFFECT[part]
        if part in tp.model_fields:
            return "model", tp.model_fields[part].annotation
        return "refused", "not supported yet" if part in tp.UNSUPPORTED else "unknown to gitdock"
    return "value", ""


def model_status(key: str) -> tuple[str, str]:
    """What the models say of a schema key: implemented, warned or refused, and why."""
    if key in READER_KEYS or any(key.startswith(k + ".") for k in READER_KEYS):
        return "implemented", "read.py"
    tp: Any = compose_schema.ComposeFile
    for part in key.split("."):
        status, found = _descend(tp, part)
        if status != "model":
            return ("implemented", "") if status == "value" else (status, found)
        tp = found
    buildkit = getattr(compose_schema, "BUILDKIT_BUILD_KEYS", ())
    if key.startswith(BUILD + ".") and key.rsplit(".", 1)[1] in buildkit:
        return "refused", "BuildKit only: the classic builder gitdock drives has no such option"
    return "implemented", ""


# --- the corpus ---------------------------------------------------------------------------


def _external_objects(project: Any) -> ObservedState:
    """The external networks and volumes the corpus names, as if they existed."""
    networks = tuple(
        ObservedNetwork(labels={}, id=f"id-{n.name}", name=n.name, driver=n.driver)
        for n in project.networks
        if n.external
    )
    volumes = tuple(
        ObservedVolume(labels={}, name=v.name, driver=v.driver) for v in project.volumes if v.external
    )
    return ObservedState(networks=networks, volumes=volumes)


def load_valid(path: Path) -> tuple[Any, list[str]]:
    return load_project_with_warnings([path], environ=ENVIRON)


@pytest.mark.parametrize("path", corpus_params(VALID))
def test_every_valid_corpus_file_loads_and_plans(path: Path) -> None:
    project, _warnings = load_valid(path)
    plan = plan_project(project, _external_objects(project))
    assert plan.operations, f"{path.name}: nothing planned"


@pytest.mark.parametrize("path", corpus_params(INVALID))
def test_every_invalid_corpus_file_is_refused_naming_the_problem(path: Path) -> None:
    expected = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(SpecError) as exc:
        load_project([path], environ=ENVIRON)
    problems = [str(p) for p in exc.value.problems]
    assert any(expected in p for p in problems), problems


def classify_keys() -> dict[str, tuple[str, str, bool]]:
    """Schema key -> (status, reason, covered by the valid corpus)."""
    usages: dict[str, list[bool]] = {}
    for path in VALID:
        _project, warnings = load_valid(path)
        for doc in yaml.safe_load_all(path.read_text()):
            for key, concrete in used_keys(doc):
                warned = any(w.startswith(_prefixes(concrete)) for w in warnings)
                usages.setdefault(key, []).append(warned)
    for path in INVALID:  # a refused key is covered by the file that shows it refused
        for doc in yaml.safe_load_all(path.read_text()):
            for key, _concrete in used_keys(doc):
                usages.setdefault(key, [])
    out: dict[str, tuple[str, str, bool]] = {}
    for key in sorted(schema_keys()):
        status, reason = model_status(key)
        seen = usages.get(key, [])
        if status == "implemented" and seen and all(seen):
            status, reason = "warned", "the load warns: no effect on a plain Docker host"
        out[key] = (status, reason, key in usages)
    return out


def _prefixes(concrete: str) -> tuple[str, ...]:
    parts = concrete.replace("[", ".[").split(".")
    return tuple(
        f"{'.'.join(parts[:i]).replace('.[', '[')}{end}"
        for i in range(1, len(parts) + 1)
        for end in (" ", ":")
    )


def test_the_corpus_covers_every_key_of_the_specification() -> None:
    keys = classify_keys()
    total = len(keys)
    covered = [k for k, (_s, _r, seen) in keys.items() if seen]
    counts = {s: sum(1 for v in keys.values() if v[0] == s) for s in ("implemented", "warned", "refused")}
    print(
        f"\nCompose Specification keys: {total}; "
        f"the corpus covers {len(covered)} ({len(covered) / total:.0%})"
    )
    for status, count in counts.items():
        print(f"  {status}: {count} ({count / total:.0%})")
    for key, (status, reason, _seen) in keys.items():
        if status == "refused":
            print(f"  refused {key}: {reason}")
    untested = sorted(k for k, (_s, _r, seen) in keys.items() if not seen and not k.startswith(BUILD))
    assert untested == [], f"keys of the Specification no corpus file uses: {untested}"
    unknown = sorted(k for k, (s, r, _) in keys.items() if s == "refused" and r == "unknown to gitdock")
    assert unknown == [], f"keys of the Specification gitdock does not know: {unknown}"


def test_include_env_file_is_resolved_against_the_including_files_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "compose.yaml").write_text("services:\n  s:\n    image: busybox:${TAG:?}\n")
    (tmp_path / "tag.env").write_text("TAG=1\n")
    (tmp_path / "compose.yaml").write_text("include:\n  - path: sub/compose.yaml\n    env_file: tag.env\n")
    assert load_project([tmp_path / "compose.yaml"], environ={}).service("s").image == "busybox:1"


def test_config_hashes_of_a_file_valid_before_issue_11_are_unchanged() -> None:
    """An upgrade must not recreate every container: the pinned hashes were computed by the
    code before issue 11 added its keys (which add hash input only when set)."""
    project = load_project([CORPUS / "pinned" / "compose.yaml"], environ=ENVIRON)
    found = {f"service:{s.name}": desired_container(project, s, 1).config_hash for s in project.services}
    found |= {f"network:{n.key}": desired_network(project, n).config_hash for n in project.networks}
    found |= {f"volume:{v.key}": desired_volume(project, v).config_hash for v in project.volumes}
    assert found == json.loads((CORPUS / "pinned" / "hashes.json").read_text())
