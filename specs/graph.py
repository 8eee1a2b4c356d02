"""Dependency graphs between services: cycles and a stable dependency order.

Purely computational. The loader reports every cycle as a spec problem; the planner orders
services with ``dependency_order`` (and refuses a cycle the loader could not have seen).
A graph maps each node to the nodes it depends on; edges to unknown nodes and self-edges are
ignored here, because the loader reports those on their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class CycleError(ValueError):
    """The graph has a cycle; ``cycle`` is closed: ``["web", "db", "web"]``."""

    def __init__(self, cycle: list[str]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(cycle))
        self.cycle = cycle


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The cycles closed by DFS back edges (at least one per cyclic group), each once,
    rotated to start at its least name and closed: ``["db", "web", "db"]``.

    Iterative (an explicit stack), so a chain of thousands of services costs no recursion.
    """
    cycles: dict[tuple[str, ...], list[str]] = {}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        todo: list[Iterator[str]] = [iter(sorted(graph.get(root, ())))]
        state[root] = 1
        while todo:
            dep = next(todo[-1], None)
            if dep is None:
                todo.pop()
                state[path.pop()] = 2
            elif dep == path[-1] or dep not in graph:
                continue
            elif state.get(dep) == 1:
                cycle = path[path.index(dep) :]
                start = cycle.index(min(cycle))
                ordered = cycle[start:] + cycle[:start]
                cycles.setdefault(tuple(ordered), [*ordered, ordered[0]])
            elif state.get(dep) is None:
                state[dep] = 1
                path.append(dep)
                todo.append(iter(sorted(graph.get(dep, ()))))
    return list(cycles.values())


def dependency_order(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """Every node after the nodes it depends on, ties broken by name.

    Raises CycleError with the first cycle met, as the walk from the least name finds it.
    Iterative, like ``find_cycles``.
    """
    order: list[str] = []
    state: dict[str, int] = {}
    for root in sorted(graph):
        if state.get(root) == 2:
            continue
        path: list[str] = [root]
        todo: list[Iterator[str]] = [iter(sorted(graph[root]))]
        state[root] = 1
        while todo:
            dep = next(todo[-1], None)
            if dep is None:
                todo.pop()
                node = path.pop()
                state[node] = 2
                order.append(node)
            elif dep not in graph or state.get(dep) == 2:
                continue
            elif state.get(dep) == 1:
                raise CycleError([*path[path.index(dep) :], dep])
            else:
                state[dep] = 1
                path.append(dep)
                todo.append(iter(sorted(graph[dep])))
    return order
