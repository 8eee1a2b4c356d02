"""``gitdock drift``: compare the live host with what gitdock last applied, without the agent.

Exit codes: 0 no drift, 2 drift found, 1 an error (no applied record, Docker unreachable).
The check reads the applied record ``gitdock apply`` stored in the state directory
(``--state-dir``, ``$GITDOCK_STATE_DIR``, ``/var/lib/gitdock`` as root) and asks dockerd for
the events since that apply, to say what happened. ``--deep`` also inspects every container
(environment, restart policy, resource limits, port bindings, mounts).
"""

from __future__ import annotations

import argparse
from typing import Final

from gitdock.agent.applied_store import STATE_DB, AppliedStore
from gitdock.agent.cli.common import EXIT_CHANGES, EXIT_OK, docker_client
from gitdock.agent.cli.project import add_project_args, project_name, state_dir
from gitdock.runtime.drift.watch import check_drift
from gitdock.specs.errors import GitdockError

__all__ = ["NoAppliedRecord", "add_drift_commands", "cmd_drift"]

EXIT_DRIFT: Final = EXIT_CHANGES


class NoAppliedRecord(GitdockError):
    """gitdock has not applied the project with this state directory."""


def _no_record(name: str) -> NoAppliedRecord:
    return NoAppliedRecord(f"no applied record for project {name}: run gitdock apply first")


def cmd_drift(args: argparse.Namespace) -> int:
    name = project_name(args)
    where = state_dir(args)
    if not (where / STATE_DB).is_file():
        raise _no_record(name)
    with AppliedStore.open(where) as store:
        record = store.load(name)
        if record is None:
            raise _no_record(name)
        with docker_client(args) as docker:
            report = check_drift(
                docker,
                record,
                deep=args.deep,
                previous=store.last_report(name),
                secret_names=frozenset(args.secret or ()),
            )
        store.save_report(report)
    if args.output == "json":
        print(report.to_json())
    elif args.output == "markdown":
        print(report.render_markdown())
    else:
        print(report.render_text())
    return EXIT_DRIFT if report.has_drift else EXIT_OK


def add_drift_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gitdock drift`` to the CLI's subparsers."""
    p = sub.add_parser("drift", help="show what changed on the host since gitdock last applied the project")
    add_project_args(p)
    p.add_argument("--output", choices=["text", "json", "markdown"], default="text")
    p.add_argument(
        "--state-dir",
        help="where gitdock apply stored its record (default: $GITDOCK_STATE_DIR, "
        "/var/lib/gitdock as root, else $XDG_STATE_HOME/gitdock)",
    )
    p.add_argument(
        "--deep",
        action="store_true",
        help="inspect every container too: environment, restart policy, limits, ports, mounts",
    )
    p.add_argument(
        "--secret",
        action="append",
        metavar="NAME",
        help="an environment variable whose value is never shown (repeatable; names like "
        "*PASSWORD*, *TOKEN*, *KEY* are always redacted)",
    )
    p.set_defaults(func=cmd_drift)
