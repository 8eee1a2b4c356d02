"""``--swarm`` for plan, apply and down: the project as a stack on a Docker Swarm.

    gitdock plan --swarm [-f FILE] [--output json] [--exit-code]
    gitdock apply --swarm [-f FILE] [--wait-timeout S]   exit 1 when a rollout rolled back
    gitdock down --swarm [-p NAME]                       services, configs, secrets, networks

``add_swarm_flags`` adds the flag to the parsers ``compose`` registered and routes a
``--swarm`` run here; without the flag they run as before. The engine (``--host``) must be a
Swarm manager.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from gitdock.agent.cli.common import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, docker_client, print_json
from gitdock.agent.cli.project import compose_files, project_name, sops_keyring

if TYPE_CHECKING:
    # Imported where used: every plan/apply/down parser gets --swarm, and a plain (not
    # --swarm) apply must not pay for the Swarm runtime and the validating loader.
    from gitdock.runtime.swarm.converge import SwarmOutcome
    from gitdock.runtime.swarm.desired import SwarmInputs
    from gitdock.runtime.swarm.execute import SwarmEvent
    from gitdock.specs.model import Project

__all__ = ["add_swarm_flags"]

log = logging.getLogger("gitdock.specs")

Command = Callable[[argparse.Namespace], int]


def load_swarm_project(args: argparse.Namespace) -> tuple[Project, SwarmInputs]:
    """The project and its Swarm-only settings; warnings that only say "Swarm only" are moot."""
    from gitdock.runtime.swarm.load import load_swarm_inputs, swarm_warning
    from gitdock.specs.load import load_project_with_warnings

    files = compose_files(args)
    project, warnings = load_project_with_warnings(
        files,
        project_name=args.project_name,
        env_file=args.env_file,
        profiles=getattr(args, "profile", None) or None,
        ignore_build=getattr(args, "ignore_build", False),
        keyring=sops_keyring(args),
    )
    for warning in warnings:
        if not swarm_warning(warning):
            log.warning("%s", warning)
    return project, load_swarm_inputs(files, project, env_file=args.env_file)


def cmd_swarm_plan(args: argparse.Namespace) -> int:
    from gitdock.runtime.swarm.converge import converge_swarm

    project, inputs = load_swarm_project(args)
    with docker_client(args) as docker:
        outcome = converge_swarm(project, docker, inputs, dry_run=True)
    plan = outcome.plan
    if args.output == "json":
        print_json(plan.to_dict())
    elif plan.is_empty:
        print(f"stack {project.name} is up to date: nothing to change")
    else:
        print(plan.render())
    if args.exit_code and not plan.is_empty:
        return EXIT_CHANGES
    return EXIT_OK


def _progress(event: SwarmEvent) -> None:
    if event.phase in ("start", "submitted"):
        return
    line = f"{event.op.resource}: {event.op.kind.value} {event.phase}"
    print(f"{line}: {event.error}" if event.error else line, file=sys.stderr)


def report_swarm(outcome: SwarmOutcome, verb: str, name: str) -> int:
    """Print what happened; exit 1 when anything did not finish, saying how it ended."""
    from gitdock.runtime.swarm.execute import SwarmStatus

    for drift in outcome.drift:
        print(f"drift: {drift.render()}", file=sys.stderr)
    if outcome.report is None:
        print(
            f"stack {name}: nothing to {verb} ({outcome.api_calls} Docker API calls, "
            f"{outcome.mutating_calls} mutating)"
        )
        return EXIT_OK
    report = outcome.report
    if report.ok:
        print(f"stack {name}: {len(report.results)} operation(s) done in {report.seconds:.1f}s")
        return EXIT_OK
    for result in report.results:
        if result.status is not SwarmStatus.DONE:
            print(f"error: {result.render()}", file=sys.stderr)
    return EXIT_ERROR


def cmd_swarm_apply(args: argparse.Namespace) -> int:
    from gitdock.runtime.swarm.converge import converge_swarm

    project, inputs = load_swarm_project(args)
    with docker_client(args) as docker:
        outcome = converge_swarm(project, docker, inputs, timeout=args.wait_timeout, on_event=_progress)
    return report_swarm(outcome, "change", project.name)


def cmd_swarm_down(args: argparse.Namespace) -> int:
    from gitdock.runtime.swarm.converge import tear_down_swarm

    name = project_name(args) if args.project_name else load_swarm_project(args)[0].name
    with docker_client(args) as docker:
        outcome = tear_down_swarm(name, docker)
    return report_swarm(outcome, "remove", name)


_SWARM_COMMANDS: dict[str, Command] = {
    "plan": cmd_swarm_plan,
    "apply": cmd_swarm_apply,
    "down": cmd_swarm_down,
}


def _routed(plain: Command, swarm: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        return swarm(args) if getattr(args, "swarm", False) else plain(args)

    return run


def add_swarm_flags(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``--swarm`` to the registered ``plan``, ``apply`` and ``down`` parsers."""
    for name, swarm in _SWARM_COMMANDS.items():
        parser = sub.choices[name]
        parser.add_argument(
            "--swarm",
            action="store_true",
            help="the project as a stack on a Docker Swarm (the engine must be a manager)",
        )
        parser.set_defaults(func=_routed(parser.get_default("func"), swarm))
