"""The root of gitdock's exception tree, and the spec errors.

This is the one module every layer may import. Every error gitdock raises is one of two
kinds, because an agent must know what to do next::

    GitdockError
    ├── PermanentError          a person must act: a new commit, a config change. Retrying the
    │   │                       same input gives the same failure, so the agent does not loop.
    │   ├── SpecError           the Compose files are invalid (carries every problem found): here
    │   ├── ConflictError       a name is taken by an object gitdock does not own: runtime.plan
    │   ├── PlanError           valid, but the host cannot be converged to it: runtime.plan
    │   ├── TrustError          an image failed signature policy: runtime.trust.errors
    │   └── ...                 bad agent config, webhooks, git refs: beside their code
    ├── TransientError          the outside world failed; retrying later may fix it
    │   ├── DockerUnavailable   dockerd cannot be reached: runtime.docker
    │   ├── RegistryUnavailable a registry cannot be reached: runtime.trust.registry
    │   └── SourceUnavailable   git cannot be reached: agent.git
    └── DockerError             one Docker call failed (``status``): runtime.docker

Each seam (Docker, registry, git) defines its errors beside the code that raises them and
translates its third-party exceptions into this tree once, by a table; nothing from httpx or
pygit2 escapes a seam. Messages read "what failed: why" and never contain secrets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # an annotation only: importing the errors does not import the model
    from gitdock.specs.model import Position


class GitdockError(Exception):
    """Base of every error gitdock raises on purpose."""


class PermanentError(GitdockError):
    """Retrying with the same input cannot succeed; a new commit or a person must fix it."""


class TransientError(GitdockError):
    """A dependency failed in a way that retrying later may fix."""


@dataclass(frozen=True)
class SpecProblem:
    """One problem in a Compose file: where, which field, what is wrong."""

    message: str
    path: str = ""  # dotted field path, e.g. "services.web.ports[1]"
    position: Position | None = None

    def __str__(self) -> str:
        where = f"{self.position}: " if self.position else ""
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"


class SpecError(PermanentError):
    """The project's Compose files are invalid. Carries every problem found, not just the first."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = sorted(
            problems,
            key=lambda p: (
                p.position.file if p.position else "",
                p.position.line if p.position else 0,
                p.position.column if p.position else 0,
                p.path,
            ),
        )
        super().__init__(self.render())

    def render(self) -> str:
        """One line for one problem; else a count and the first MAX_SHOWN problems, one a line."""
        if len(self.problems) == 1:
            return str(self.problems[0])
        lines = [f"{len(self.problems)} problems in the Compose files:"]
        lines += [f"  {p}" for p in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            lines.append(f"  ... and {len(self.problems) - MAX_SHOWN} more")
        return "\n".join(lines)


MAX_SHOWN = 50  # problems a SpecError's message lists: a generated file can have thousands
