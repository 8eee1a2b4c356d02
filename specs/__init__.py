"""The Compose spec loader: Compose files in, a validated ``model.Project`` out.

    from gitdock.specs import load_project, SpecError

Pure apart from reading the files it is given: no Docker, no network.
"""

from .errors import SpecError, SpecProblem
from .interpolate import InterpolationError, interpolate, parse_env_file
from .load import load_project, load_project_with_warnings, normalise_project_name

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
