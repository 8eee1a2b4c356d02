"""YAML to plain Python values, remembering where every value came from.

PyYAML's constructors drop line numbers, so this module walks the composed node graph
itself. It resolves plain scalars with YAML 1.2 core-schema rules, as Compose (go-yaml v3)
does: ``no`` stays a string and ``22:22`` is not the sexagesimal integer 1342. Anchors,
aliases and ``<<`` merge keys are expanded; duplicate keys are problems.

Hostile documents are bounded before they cost anything: nesting deeper than ``MAX_DEPTH`` is
refused from the parser's events (no recursion has started), alias expansion stops at
``MAX_NODES`` values or ``MAX_EXPANDED_BYTES`` of text (a "billion laughs" or a big anchor
aliased thousands of times, as Kubernetes' YAML limits do), a mapping merged twice into the
same ``<<`` is merged once (the exponential merge-key bomb), and a NUL byte is a problem.

This module is pure apart from the text it is handed: it reads no files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from gitdock.specs.errors import SpecProblem
from gitdock.specs.model import Position

# libyaml is several times faster; fall back when PyYAML was built without it.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Path = tuple[str | int, ...]
# Called for every string scalar that is a value (never a key); returns the new value.
StringHook = Callable[[str, Path, Position], str]

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Tags the YAML 1.1 resolver assigns implicitly to plain scalars; these are re-resolved.
_IMPLICIT_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp", "value")
)
MAX_NODES = 500_000  # values after alias expansion: guards against alias bombs ("billion laughs")
MAX_EXPANDED_BYTES = 32 << 20  # text of every scalar after alias expansion (twice the file cap)
MAX_DEPTH = 100  # nested mappings and sequences; Compose files nest about ten deep

_INT_RE = re.compile(r"[-+]?[0-9]+")
_OCT_RE = re.compile(r"0o[0-7]+")
_HEX_RE = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT_RE = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_INF_RE = re.compile(r"[-+]?\.(?:inf|Inf|INF)")
_NAN_RE = re.compile(r"\.(?:nan|NaN|NAN)")
_SIMPLE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")


def format_path(path: Path) -> str:
    """Render a field path the way problems show it: ``services.web.ports[1]``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _SIMPLE_KEY_RE.fullmatch(part):
            out.append(f".{part}" if out else part)
        else:
            out.append(f'["{part}"]')
    return "".join(out)


class PDict(dict[str, Any]):
    """A YAML mapping that remembers its own position and where each key and value was."""

    __slots__ = ("kpos", "pos", "vpos")

    def __init__(self, pos: Position | None = None) -> None:
        super().__init__()
        self.pos = pos
        self.kpos: dict[str, Position] = {}
        self.vpos: dict[str, Position] = {}

    def put(self, key: str, value: Any, kpos: Position | None, vpos: Position | None) -> None:
        self[key] = value
        if kpos is not None:
            self.kpos[key] = kpos
        if vpos is not None:
            self.vpos[key] = vpos


class PList(list[Any]):
    """A YAML sequence that remembers its own position and where each item was."""

    __slots__ = ("pos", "vpos")

    def __init__(self, pos: Position | None = None) -> None:
        super().__init__()
        self.pos = pos
        self.vpos: list[Position | None] = []

    def add(self, value: Any, vpos: Position | None) -> None:
        self.append(value)
        self.vpos.append(vpos)


@dataclass(frozen=True)
class Reset:
    """``!reset``: when files are merged, the key is removed from what came before."""


@dataclass(frozen=True)
class Override:
    """``!override``: when files are merged, ``value`` replaces what came before wholesale."""

    value: Any


RESET = Reset()


def position_of(container: Any, part: str | int, *, key: bool = False) -> Position | None:
    """Where ``container[part]`` (or, with ``key``, its key) was written, when known."""
    if isinstance(container, PDict) and isinstance(part, str):
        return (container.kpos if key else container.vpos).get(part)
    if isinstance(container, PList) and isinstance(part, int) and 0 <= part < len(container.vpos):
        return container.vpos[part]
    return None


def _child(node: Any, part: str | int) -> Any:
    if isinstance(node, dict) and isinstance(part, str):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return node[part]
    return None


@dataclass
class Document:
    """A loaded YAML document: plain values whose mappings and lists carry positions.

    Positions travel with the data (``PDict``/``PList``), so they stay right when files are
    merged, services extended and lists appended. ``root`` is the document's own position.
    """

    data: Any
    root: Position | None = None

    def locate(self, path: Path, *, prefer_key: bool = False) -> Position | None:
        """Position of ``path`` (its value, or its key with ``prefer_key``), else of its
        nearest ancestor that has one."""
        found: list[tuple[Position | None, Position | None]] = [(None, self.root)]
        node = self.data
        for part in path:
            kpos = position_of(node, part, key=True)
            vpos = position_of(node, part)
            node = _child(node, part)
            if kpos is None and vpos is None and node is None:
                break
            found.append((kpos, vpos))
        for kpos, vpos in reversed(found):
            first, second = (kpos, vpos) if prefer_key else (vpos, kpos)
            if first is not None or second is not None:
                return first or second
        return None


def resolve_plain_scalar(text: str) -> Any:
    """Resolve an untagged plain scalar with the YAML 1.2 core schema."""
    if not text or text in ("~", "null", "Null", "NULL"):
        return None
    first = text[0]
    if first in "tTfF":
        if text in ("true", "True", "TRUE"):
            return True
        if text in ("false", "False", "FALSE"):
            return False
        return text
    if first not in "+-.0123456789":
        return text
    if _INT_RE.fullmatch(text):
        digits = text.lstrip("+-")
        if len(digits) > 1 and digits[0] == "0":
            # go-yaml v3 (Compose) reads a leading 0 as octal, as in file modes: 0440.
            try:
                return int(text[: len(text) - len(digits)] + "0o" + digits[1:], 8)
            except ValueError:
                return float(text)
        return int(text)
    if _OCT_RE.fullmatch(text):
        return int(text[2:], 8)
    if _HEX_RE.fullmatch(text):
        return int(text[2:], 16)
    if _FLOAT_RE.fullmatch(text):
        return float(text)
    if _INF_RE.fullmatch(text):
        return -math.inf if text[0] == "-" else math.inf
    if _NAN_RE.fullmatch(text):
        return math.nan
    return text


_RESET_TAG, _OVERRIDE_TAG = "!reset", "!override"


def load_yaml(
    text: str,
    filename: str,
    on_string: StringHook | None = None,
    merge: Callable[[Any, Any], Any] | None = None,
) -> tuple[Document, list[SpecProblem]]:
    """Parse a YAML file into plain values with positions; several documents are merged in
    order by ``merge`` (``merge.merge_documents``, which this module sits below).

    Returns every problem found; a parse error is a single problem at the parser's mark.
    An empty document yields ``Document(None)``. ``!reset`` and ``!override`` become
    ``Reset``/``Override`` markers for the merge of several files to act on.
    """
    try:
        too_deep = _too_deep(text, filename)
        if too_deep is not None:
            return Document(None), [too_deep]
        nodes = list(yaml.compose_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = Position(filename, mark.line + 1, mark.column + 1) if mark else Position(filename, 1, 1)
        what = exc.problem or "invalid YAML"
        if exc.context:
            what = f"{exc.context}, {what}"
        return Document(None), [SpecProblem(f"invalid YAML: {what}", "", pos)]
    except yaml.YAMLError as exc:  # e.g. a reader error on control characters
        return Document(None), [SpecProblem(f"invalid YAML: {exc}", "", Position(filename, 1, 1))]
    walker = _Walker(filename, on_string)
    nodes = [n for n in nodes if n is not None]
    if not nodes:
        return Document(None), []
    data = walker.convert(nodes[0], ())
    for node in nodes[1:]:
        # Several documents in one file merge in order, as several -f files do (compose-go).
        if merge is None:
            walker.problem("a file with several YAML documents needs a merge (none given)", (), node)
            break
        data = merge(data, walker.convert(node, ()))
    return Document(data, walker.position(nodes[0])), walker.problems


def _too_deep(text: str, filename: str) -> SpecProblem | None:
    """A problem at the first collection nested deeper than MAX_DEPTH, from the parser's
    events: libyaml's parser keeps its own stack, so no recursion runs before this answers."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                where = (
                    Position(filename, mark.line + 1, mark.column + 1) if mark else Position(filename, 1, 1)
                )
                return SpecProblem(f"invalid YAML: nested more than {MAX_DEPTH} levels deep", "", where)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return None


class _Walker:
    def __init__(self, filename: str, on_string: StringHook | None) -> None:
        self.filename = filename
        self.on_string = on_string
        self.problems: list[SpecProblem] = []
        self._stack: set[int] = set()
        self._count = 0
        self._bytes = 0
        self._exhausted = False

    def position(self, node: yaml.Node) -> Position:
        mark = node.start_mark
        return Position(self.filename, mark.line + 1, mark.column + 1)

    def problem(self, message: str, path: Path, node: yaml.Node) -> None:
        self.problems.append(SpecProblem(message, format_path(path), self.position(node)))

    def _spend(self, path: Path, node: yaml.Node, size: int = 0) -> bool:
        """Count one value (of ``size`` characters); False, with one problem, past the limits."""
        self._count += 1
        self._bytes += size
        if self._count <= MAX_NODES and self._bytes <= MAX_EXPANDED_BYTES:
            return True
        if not self._exhausted:
            self._exhausted = True
            limit = f"{MAX_NODES} values" if self._count > MAX_NODES else f"{MAX_EXPANDED_BYTES >> 20} MiB"
            self.problem(f"the document expands to more than {limit} through aliases and merges", path, node)
        return False

    def convert(self, node: yaml.Node, path: Path) -> Any:
        size = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        if not self._spend(path, node, size):
            return None
        tag = node.tag
        if tag == _RESET_TAG:
            return RESET
        if tag == _OVERRIDE_TAG:
            node = _retag(node)
            return Override(self.convert(node, path))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._stack:
            self.problem("recursive alias", path, node)
            return None
        self._stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                out = PList(self.position(node))
                for i, item in enumerate(node.value):
                    out.add(self.convert(item, (*path, i)), self.position(item))
                return out
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, path)
        finally:
            self._stack.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, path: Path) -> Any:
        tag = node.tag
        # libyaml marks plain scalars with style "", pure-Python PyYAML with None.
        if not node.style and tag in _IMPLICIT_TAGS:
            value = resolve_plain_scalar(node.value)
        elif tag in _IMPLICIT_TAGS:
            value = node.value
        else:
            self.problem(f"YAML tag {tag} is not supported", path, node)
            return node.value
        if isinstance(value, str) and self.on_string is not None and "$" in value:
            value = self.on_string(value, path, self.position(node))
        if isinstance(value, str) and "\0" in value:
            # Kept as visible text, so no path or argument downstream ever holds a NUL.
            self.problem("contains a NUL byte", path, node)
            value = value.replace("\0", "\\0")
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path, into: PDict | None = None) -> PDict:
        """Convert a mapping. With ``into`` (a merge source), keys already there are kept."""
        merging = into is not None
        out = PDict(self.position(node)) if into is None else into
        first_seen: dict[str, yaml.Node] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem("mapping keys must be strings", path, key_node)
                continue
            key = key_node.value
            if not key_node.style and not isinstance(resolve_plain_scalar(key), str):
                # Compose refuses non-string keys (compose-go: "non-string key").
                self.problem(f"non-string key {key}: quote it to use it as a name", (*path, key), key_node)
                continue
            if key in first_seen:
                if not merging:
                    line = first_seen[key].start_mark.line + 1
                    self.problem(
                        f"duplicate key `{key}` (first defined on line {line})", (*path, key), key_node
                    )
                continue
            first_seen[key] = key_node
            if merging and key in out:
                continue
            out.put(
                key,
                self.convert(value_node, (*path, key)),
                self.position(key_node),
                self.position(value_node),
            )
        merged: set[int] = set()
        for merge_node in merges:
            self._merge(out, merge_node, path, merged)
        return out

    def _merge(self, out: PDict, merge_node: yaml.Node, path: Path, merged: set[int]) -> None:
        """Apply a ``<<`` value: explicit keys win, then earlier merged mappings win.

        Merged values are converted under the destination path, so their interpolation
        problems name the field where they end up. A mapping already merged into ``out``
        (``merged``: node ids) adds nothing and is skipped, which keeps ``<<: [*a, *a]``
        chains linear instead of exponential.
        """
        sources = merge_node.value if isinstance(merge_node, yaml.SequenceNode) else [merge_node]
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                self.problem("a merge key `<<` needs a mapping or a list of mappings", path, source)
                continue
            if id(source) in self._stack:
                self.problem("recursive alias", path, source)
                continue
            if id(source) in merged or not self._spend(path, source):
                continue
            merged.add(id(source))
            self._stack.add(id(source))
            try:
                self._mapping(source, path, into=out)
            finally:
                self._stack.discard(id(source))


def _retag(node: yaml.Node) -> yaml.Node:
    """The node without its ``!override`` tag, resolved as if it were untagged."""
    if isinstance(node, yaml.ScalarNode):
        tag = "tag:yaml.org,2002:str" if node.style else "tag:yaml.org,2002:value"
        return yaml.ScalarNode(tag, node.value, node.start_mark, node.end_mark, node.style)
    if isinstance(node, yaml.SequenceNode):
        return yaml.SequenceNode(
            "tag:yaml.org,2002:seq", node.value, node.start_mark, node.end_mark, node.flow_style
        )
    assert isinstance(node, yaml.MappingNode)
    return yaml.MappingNode(
        "tag:yaml.org,2002:map", node.value, node.start_mark, node.end_mark, node.flow_style
    )
