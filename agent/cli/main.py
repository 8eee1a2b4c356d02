"""The ``gitdock`` command line: builds the parser from the command modules and dispatches.

The commands live beside it, one module per group, each registering its own subparsers:
``compose`` (plan, apply, down, ps, logs), ``trust`` (keygen, sign, verify), ``drift``, and
``agent`` (agent, status, reconcile, suspend, resume, history). What they share is in
``common`` (exit codes, output, the Docker client, error handling) and ``project`` (the
Compose files and the options that choose them).

Exit codes: 0 success; 1 an error (bad spec, Docker unreachable, a name conflict, a failed
operation); 2 for ``plan --exit-code`` when the plan is not empty.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gitdock.agent.cli.common import run_command
from gitdock.agent.cli.compose import COMMANDS as CORE_COMMANDS
from gitdock.agent.cli.compose import add_compose_commands

if TYPE_CHECKING:
    from gitdock.agent.cli.early import EarlyLook

__all__ = ["build_parser", "main"]


def _add_other_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The trust, drift and agent commands, whose modules are slower to import."""
    try:
        from gitdock.agent.cli.trust import add_trust_commands
    except ImportError:  # the trust commands ship with the registry module
        pass
    else:
        add_trust_commands(sub)
    from gitdock.agent.cli.drift import add_drift_commands

    add_drift_commands(sub)
    from gitdock.agent.cli.agent import add_agent_commands

    add_agent_commands(sub)


def _version() -> str:
    """The installed distribution's version: pyproject.toml is the one place it is written."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gitdock")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, reading the installed metadata only when asked: importlib.metadata costs
    every other command ~15-30 ms (a tenth of a no-op apply)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show the version")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"gitdock {_version()}")
        parser.exit()


def build_parser(*, core_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``core_only`` leaves out the agent, trust and drift commands,
    whose modules are slower to import, when the command run is not one of them."""
    parser = argparse.ArgumentParser(
        prog="gitdock", description="Declarative GitOps deployment of Compose projects to Docker."
    )
    parser.add_argument(
        "--host",
        help="Docker host: unix:///path, tcp://host:port (TLS by $DOCKER_TLS_VERIFY, $DOCKER_CERT_PATH) "
        "or ssh://user@host (default: $DOCKER_HOST)",
    )
    parser.add_argument("--context", help="Docker CLI context to use (default: $DOCKER_CONTEXT)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_compose_commands(sub)
    if not core_only:
        _add_other_commands(sub)
    return parser


def _is_core_command(words: list[str]) -> bool:
    """Whether the command in `words` is plainly one of CORE_COMMANDS.

    ``--host X`` and ``--context X`` take a value that is not the command; only take the
    shortcut when it is plain.
    """
    command = next((w for w in words if not w.startswith("-")), None)
    if command not in CORE_COMMANDS:
        return False
    return not {"--host", "--context"} & set(words[: words.index(command)])


def main(argv: Sequence[str] | None = None, *, early: EarlyLook | None = None) -> int:
    """Run the command in ``argv`` (else the command line). ``early``: the observe the
    ``gitdock`` command started before importing this module (``cli.early``), for its apply."""
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(core_only=_is_core_command(words)).parse_args(argv)
    if early is not None and args.command == "apply":
        args.early_look = early
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    return run_command(args)


if __name__ == "__main__":  # `python -m gitdock.agent.cli.main`: as the `gitdock` command
    from gitdock.agent.cli.entry import main as command

    sys.exit(command())
