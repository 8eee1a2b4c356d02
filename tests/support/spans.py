"""Assert span trees: capture finished spans in memory and view them as names and nesting.

``capture_spans()`` installs, once per process, a global TracerProvider that writes to one
in-memory exporter (OTel allows a single global provider), and clears it around each use.
``span_tree``/``render_tree`` turn finished spans into a tree ordered by start time::

    with capture_spans() as exporter:
        converge(...)
    assert render_tree(exporter.get_finished_spans()) == textwrap.dedent('''\\
        SYNC demo
          observe
          plan
    ''')
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["SpanNode", "capture_spans", "find_span", "render_tree", "span_tree"]

_exporter = InMemorySpanExporter()
_provider: TracerProvider | None = None
_lock = threading.Lock()


@dataclass
class SpanNode:
    """One finished span and its children (by start time)."""

    span: ReadableSpan
    children: list[SpanNode] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> Mapping[str, Any]:
        return dict(self.span.attributes or {})

    def shape(self) -> tuple[str, list[Any]]:
        """``(name, [child shapes])``: what a nesting assertion compares."""
        return self.name, [c.shape() for c in self.children]

    def child(self, name: str) -> SpanNode:
        """The one child named ``name``; AssertionError if there is not exactly one."""
        found = [c for c in self.children if c.name == name]
        assert len(found) == 1, f"{self.name!r} has {len(found)} children named {name!r}: {self.shape()}"
        return found[0]


def span_tree(spans: Sequence[ReadableSpan]) -> list[SpanNode]:
    """The root nodes of ``spans``; a span whose parent is not among them counts as a root."""
    nodes = {s.context.span_id: SpanNode(s) for s in spans if s.context is not None}
    roots: list[SpanNode] = []
    for node in nodes.values():
        parent = node.span.parent
        holder = nodes.get(parent.span_id) if parent is not None else None
        (holder.children if holder is not None else roots).append(node)
    for node in nodes.values():
        node.children.sort(key=_order)
    return sorted(roots, key=_order)


def _order(node: SpanNode) -> tuple[int, str]:
    return node.span.start_time or 0, node.name


def render_tree(spans: Sequence[ReadableSpan]) -> str:
    """The span tree as indented names, two spaces per level, one span per line."""
    lines: list[str] = []

    def walk(node: SpanNode, depth: int) -> None:
        lines.append("  " * depth + node.name)
        for child in node.children:
            walk(child, depth + 1)

    for root in span_tree(spans):
        walk(root, 0)
    return "\n".join(lines) + "\n" if lines else ""


def find_span(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    """The one span named ``name``; AssertionError if there is not exactly one."""
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, f"{len(found)} spans named {name!r} in {[s.name for s in spans]}"
    return found[0]


@contextmanager
def capture_spans() -> Iterator[InMemorySpanExporter]:
    """Record every span ended in this block (on the global provider) in the yielded exporter."""
    global _provider
    with _lock:
        if _provider is None:
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(_exporter))
            trace.set_tracer_provider(provider)
            if trace.get_tracer_provider() is not provider:
                raise RuntimeError("another global TracerProvider is installed; capture_spans cannot work")
            _provider = provider
    _exporter.clear()  # only on entry: the spans stay readable after the block
    yield _exporter
