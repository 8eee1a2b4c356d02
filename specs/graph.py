"""Dependency graphs between services: cycles and a stable dependency order.

Purely computational. The loader reports every cycle as a spec problem; the planner orders
services with ``dependency_order`` (and refuses a cycle the loader could not have seen).
A graph maps each node to the nodes it depends on; edges to unknown nodes and self-edges are
ignored here, because the loader reports those on their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class CycleError(ValueError):
    """The graph has a cycle; ``cycle`` is closed: ``["web", "db", "web"]``."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = cycle


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The cycles closed by DFS back edges (at least one per cyclic group), each once,
    rotated to start at its least name and closed: ``["db", "web", "db"]``."""
    cycles: dict[tuple[str, ...], list[str]] = {}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep == node or dep not in graph:
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :]
                start = cycle.index(min(cycle))
                ordered = cycle[start:] + cycle[:start]
                cycles.setdefault(tuple(ordered), [*ordered, ordered[0]])
            elif state.get(dep) is None:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return list(cycles.values())


def dependency_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every node after the nodes it depends on, ties broken by name.

    Raises CycleError with the first cycle met, as the walk from the least name finds it.
    """
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            raise CycleError([*path[path.index(node) :], node])
        state[node] = 1
        for dep in sorted(graph[node]):
            if dep in graph:
                visit(dep, [*path, node])
        state[node] = 2
        order.append(node)

    for node in sorted(graph):
        visit(node, [])
    return order
