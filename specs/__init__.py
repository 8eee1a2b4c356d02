"""The Compose spec loader: Compose files in, a validated ``model.Project`` out.

    from gitdock.specs import load_project, SpecError

Pure apart from reading the files it is given: no Docker, no network. The loader (and
pydantic with it) is imported on first use, so code that only needs the model or the errors,
or reuses a cached load (``cache.py``), starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gitdock.specs.errors import SpecError, SpecProblem

# Eager: cheap, and the function `interpolate` must shadow the submodule of the same name.
from gitdock.specs.interpolate import InterpolationError, interpolate, parse_env_file

if TYPE_CHECKING:
    from gitdock.specs.load import load_project, load_project_with_warnings, normalise_project_name

__all__ = [
    "InterpolationError",
    "SpecError",
    "SpecProblem",
    "interpolate",
    "load_project",
    "load_project_with_warnings",
    "normalise_project_name",
    "parse_env_file",
]

_LAZY = {
    "load_project": "load",
    "load_project_with_warnings": "load",
    "normalise_project_name": "load",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
