"""What every ``gitdock`` command shares: exit codes, output, the Docker client, error handling.

Exit codes: 0 success; 1 an error (bad spec, Docker unreachable, a name conflict, a failed
operation); 2 when a command found changes it was asked to report (``plan --exit-code``,
``drift``); 141 when the reader of stdout went away (``gitdock verify … | head``), quietly, as
for a tool SIGPIPE stops. ``run_command`` is the one place an error becomes an exit code and
a line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, Final

from gitdock.runtime.contexts import resolve_endpoint
from gitdock.runtime.docker import DockerClient
from gitdock.specs.errors import GitdockError, SpecError

__all__ = [
    "EXIT_CHANGES",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_PIPE",
    "UsageError",
    "docker_client",
    "print_json",
    "print_table",
    "run_command",
]

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_CHANGES: Final = 2
EXIT_INTERRUPTED: Final = 130
EXIT_PIPE: Final = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe


class UsageError(GitdockError):
    """The command line itself is wrong."""


def docker_client(args: argparse.Namespace) -> DockerClient:
    """The Docker Engine client for ``--host`` or ``--context``, else ``DOCKER_HOST``,
    ``DOCKER_CONTEXT`` and the CLI's current context, as the Docker CLI resolves them."""
    return DockerClient(resolve_endpoint(args.host, getattr(args, "context", None)))


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def print_table(rows: Sequence[Sequence[object]]) -> None:
    """Print `rows` (the first is the header) as left-aligned columns two spaces apart."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command (``args.func``); any gitdock error is one line on stderr and exit 1."""
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except SpecError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
    except GitdockError as exc:
        # An error that carries several lines (a PolicyRefused: one per violation) prints each
        # as an error line of its own; the admission module is not imported to tell it apart.
        lines: Sequence[str] = getattr(exc, "lines", None) or [str(exc)]
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_ERROR


def _stdout_gone() -> int:
    """Stop quietly: stdout's reader left. Later writes (the exit's flush) go to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE
