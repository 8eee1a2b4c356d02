"""What ``gitdock apply`` starts before anything else of the command line loads.

Importing the commands, the loader and the planner takes a no-op apply about as long as
dockerd takes to list a host of 1,000 containers. So the entry point (``cli.entry``) asks
``look_early`` first: for a plain ``gitdock apply`` it makes the Docker client and sends the
observe's calls at once, then imports the command line (``cli.main``), whose ``cmd_apply``
waits for them where it would have sent them. Only the modules the client needs come first.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gitdock.runtime.docker import DockerClient
    from gitdock.runtime.observe import ObservedState

__all__ = ["EarlyLook", "look_early", "tracing_requested"]


@dataclass(frozen=True)
class EarlyLook:
    """A Docker client for the default endpoint, and the observe already sent through it."""

    docker: DockerClient
    snapshot: Callable[[], ObservedState]


def tracing_requested() -> bool:
    """True when any OTEL_* variable is set (and the SDK is not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return any(name.startswith("OTEL_") for name in os.environ)


def look_early(words: Sequence[str]) -> EarlyLook | None:
    """The early look for ``words`` when they are ``apply ...`` with the command first (so no
    ``--host`` or ``--context`` chooses another engine) and no trace is asked for (a traced
    apply observes inside its span). None otherwise, and when the endpoint does not resolve:
    the command then resolves it again and says what is wrong, as it always did."""
    if not words or words[0] != "apply" or "-h" in words or "--help" in words or tracing_requested():
        return None
    from gitdock.runtime.contexts import resolve_endpoint
    from gitdock.runtime.docker import DockerClient
    from gitdock.runtime.observe import observe_later
    from gitdock.specs.errors import GitdockError

    try:
        docker = DockerClient(resolve_endpoint(None, None))
    except GitdockError:
        return None
    return EarlyLook(docker, observe_later(docker))
