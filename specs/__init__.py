"""The Compose spec package: Compose files in, a validated ``model.Project`` out.

    from gitdock.specs import load_project, SpecError

The load is a pipeline, one module per stage (``load.py`` runs it):

- ``read``: the files, ``.env``, ``include`` and ``extends``, merged (``merge``) into one
  document with positions (``yamlpos``), interpolated (``interpolate``);
- ``checks``: keys and types against the pydantic models of ``schema`` (``validate``), then
  references, conflicts and dependency cycles (``graph``);
- ``normalise``: the validated document as the frozen ``model``;
- ``cache``: reuse a load while none of its inputs changed.

Beside them: ``errors`` (the root error tree every layer may import) and ``reference``
(image references). No Docker API names: mapping the model to the Engine API is
``gitdock.runtime.desired``'s job.

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
    from gitdock.specs.load import load_project, load_project_with_warnings
    from gitdock.specs.normalise import normalise_project_name

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
    "normalise_project_name": "normalise",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
