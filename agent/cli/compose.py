"""The commands that act on one Compose project directly: plan, apply, down, ps, logs.

    gitdock plan [-f FILE] [--output json] [--exit-code]   exit 2 with --exit-code and changes
    gitdock apply [-f FILE] [--parallel N] [--state-dir DIR]
    (plan and apply: [--policy LEVEL] [--policy-file FILE], the deploy policy; exit 1 if broken)
    gitdock down [--volumes]
    gitdock ps [--output json]
    gitdock logs SERVICE [--tail N] [--follow]

Each registers its own subparser in ``add_compose_commands``; exit codes are ``common``'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitdock.agent.applied_store import store_applied
from gitdock.agent.cli.common import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_OK,
    UsageError,
    docker_client,
    print_json,
    print_table,
)
from gitdock.agent.cli.early import EarlyLook, tracing_requested
from gitdock.agent.cli.progress import Progress
from gitdock.agent.cli.project import (
    add_policy_args,
    add_project_args,
    add_trust_args,
    admission_policy,
    compose_files,
    load_project,
    load_project_fingerprinted,
    project_name,
    state_dir,
    trust_context,
)
from gitdock.agent.cli.swarm import add_swarm_flags
from gitdock.runtime.build import BuildMode
from gitdock.runtime.docker import DockerClient, NotFound
from gitdock.runtime.observe import ObservedContainer, ObservedState, observe, observe_later
from gitdock.specs.errors import GitdockError
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.runtime.converge import ConvergeHooks, Outcome

# The planner, executor and record (runtime.converge and below) are imported where a command
# uses them: an apply sends its list calls first, so dockerd answers while they load.

__all__ = ["COMMANDS", "add_compose_commands"]

COMMANDS = frozenset({"plan", "apply", "down", "ps", "logs"})


# --- plan ----------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from gitdock.runtime.converge import converge

    project = load_project(args)
    policy, trust = admission_policy(args), trust_context(args)
    with docker_client(args) as docker:
        outcome = converge(project, docker, trust=trust, dry_run=True, build=_build_mode(args), policy=policy)
    plan = outcome.plan
    if args.output == "json":
        print_json(plan.to_dict())
    elif plan.is_empty:
        print(f"project {project.name} is up to date: nothing to change")
        if plan.render():
            print(plan.render())
    else:
        print(plan.render())
    if args.exit_code and not plan.is_empty:
        return EXIT_CHANGES
    return EXIT_OK


# --- apply and down ------------------------------------------------------------------------


def _report(outcome: Outcome, verb: str, name: str, api_calls: int | None = None) -> int:
    """Print what a converge or tear-down did, with the Docker API calls the command made
    (``api_calls``, default the converge's own). Raises ExecutionFailed if an operation failed."""
    from gitdock.runtime.execute import ExecutionFailed, OpStatus

    calls = outcome.api_calls if api_calls is None else api_calls
    plan = outcome.plan
    for line in plan.render_images():
        print(line)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if outcome.report is None:
        print(
            f"project {name}: nothing to {verb} ({calls} Docker API calls, {outcome.mutating_calls} mutating)"
        )
        return EXIT_OK
    report = outcome.report
    done = sum(1 for r in report.results if r.status is OpStatus.DONE)
    if not report.ok:
        raise ExecutionFailed(report)
    print(f"project {name}: {done} operation(s) done in {report.seconds:.1f}s ({calls} Docker API calls)")
    return EXIT_OK


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply; with OTEL_* variables set, as one exported ``SYNC <project>`` trace.

    Without them the OpenTelemetry SDK is not even imported: a no-op apply is a short command.
    """
    if not tracing_requested():
        early: EarlyLook | None = getattr(args, "early_look", None)  # main started it (cli.early)
        with early.docker if early is not None else docker_client(args) as docker:
            # dockerd lists while the project and the planner load
            look = early.snapshot if early is not None else observe_later(docker)
            project, kept = load_project_fingerprinted(args)
            from gitdock.runtime.converge import ConvergeHooks

            progress = Progress()
            hooks = ConvergeHooks(on_event=progress, on_output=progress.output)
            return _apply(args, docker, project, hooks, None, kept, look)
    from gitdock.agent import telemetry as tm

    tm.setup_telemetry()
    from gitdock.specs.load import normalise_project_name

    guess = args.project_name or normalise_project_name(Path(compose_files(args)[0]).resolve().parent.name)
    with tm.sync_span(guess or "default") as sync:
        sync.span.set_attribute("gitdock.trigger", "cli")
        with tm.step_span(tm.Step.LOAD):
            project, kept = load_project_fingerprinted(args)
        if project.name != guess:  # the file's own `name:` decides
            sync.span.update_name(f"SYNC {project.name}")
            sync.span.set_attribute(tm.CICD_PIPELINE_NAME, project.name)
            sync.project = project.name
        progress = Progress()
        hooks = tm.converge_hooks(then=progress, then_output=progress.output)
        with docker_client(args) as docker:
            return _apply(args, docker, project, hooks, sync.set_result, kept)


def _apply(
    args: argparse.Namespace,
    docker: DockerClient,
    project: Project,
    hooks: ConvergeHooks,
    set_result: Callable[[str], None] | None,
    kept: Path | None = None,
    look: Callable[[], ObservedState] | None = None,
) -> int:
    """Converge; ``kept`` is where this load's desired containers are kept between commands
    (read before planning, written after a first successful apply of the load); ``look``
    is the observe already under way (else converge observes)."""
    from gitdock.runtime.converge import converge
    from gitdock.runtime.desired_cache import recall_desired, remember_desired

    policy, trust = admission_policy(args), trust_context(args)
    recalled = kept is not None and trust is None and recall_desired(project, kept) > 0
    outcome = converge(
        project,
        docker,
        trust=trust,
        policy=policy,
        concurrency=args.parallel,
        wait_timeout=args.wait_timeout,
        hooks=hooks,
        build=_build_mode(args),
        renew_anon_volumes=args.renew_anon_volumes,
        look=look,
    )
    if outcome.is_ok:
        _store_applied(args, outcome.project or project, docker, outcome, kept.stem if kept else None)
        if kept is not None and trust is None and not recalled:
            remember_desired(project, kept)
    if outcome.is_ok and args.wait and not _wait_ready(args, docker, outcome, project.name):
        if set_result is not None:
            set_result("failure")
        return EXIT_ERROR
    if set_result is not None and outcome.report is not None and not outcome.report.ok:
        set_result("error" if outcome.report.transient else "failure")
    return _report(outcome, "change", project.name, sum(docker.calls.values()))


def _wait_ready(args: argparse.Namespace, docker: DockerClient, outcome: Outcome, project: str) -> bool:
    """``--wait``: the health gate on what the apply started (as ``docker compose up --wait``);
    False, with the reasons on stderr, when a container failed it or did not pass it in time."""
    from gitdock.agent.rollout import gated_containers
    from gitdock.runtime.health import HealthGateFailed, parse_settle, wait_ready

    containers = gated_containers(outcome, project, judged=False)
    try:
        settle = parse_settle(args.settle, 10.0)
        report = wait_ready(docker, containers, settle=settle, timeout=args.wait_timeout)
    except HealthGateFailed as exc:
        for reason in exc.reasons:
            print(f"error: {reason}", file=sys.stderr)
        return False
    print(f"{len(report.ready)} container(s) ready in {report.seconds:.1f}s")
    return True


def _store_applied(
    args: argparse.Namespace, project: Project, docker: DockerClient, outcome: Outcome, load: str | None
) -> None:
    """Record what `gitdock drift` compares the host against later (``load``: the load's
    fingerprint, so a no-op finds its record stored). A failure here is a warning: the apply
    itself succeeded."""
    where = state_dir(args)
    try:
        store_applied(project, docker, outcome, where, load=load)
    except (GitdockError, OSError) as exc:
        print(
            f"warning: could not record the applied state in {where}: {exc}; "
            "gitdock drift will not know this apply (set --state-dir or GITDOCK_STATE_DIR)",
            file=sys.stderr,
        )


def cmd_down(args: argparse.Namespace) -> int:
    project = _down_project(args)
    name = project.name if project is not None else project_name(args)
    from gitdock.runtime.converge import tear_down

    progress = Progress()
    with docker_client(args) as docker:
        outcome = tear_down(
            name,
            docker,
            remove_volumes=args.volumes,
            project=project,
            on_event=progress,
            on_output=progress.output,
        )
    return _report(outcome, "remove", name)


def _down_project(args: argparse.Namespace) -> Project | None:
    """The Compose project whose pre_stop hooks ``down`` runs: the ``-f`` files (else a default
    file here), as docker compose down loads them; None when there is none. With ``-p`` a file
    that does not load is a warning and the teardown goes ahead from the labels alone; without
    it the load's error stands, as the project's name comes from the file."""
    try:
        compose_files(args)
    except UsageError:
        return None
    try:
        return load_project(args)
    except GitdockError as exc:
        if not args.project_name:
            raise
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"warning: {first}; tearing down from the labels, no pre_stop hooks run", file=sys.stderr)
        return None


# --- ps and logs ---------------------------------------------------------------------------


def _ps_row(c: ObservedContainer) -> dict[str, Any]:
    return {
        "name": c.name,
        "service": c.service,
        "number": c.number,
        "state": c.state,
        "health": c.health,
        "status": c.status,
        "image": c.image,
        "ports": list(c.ports),
        "id": c.id[:12],
    }


def _ps_rows(docker: DockerClient, name: str) -> list[dict[str, Any]]:
    containers = observe(docker).project_containers(name)
    return [_ps_row(c) for c in sorted(containers, key=lambda c: (c.service or "", c.number))]


def cmd_ps(args: argparse.Namespace) -> int:
    name = project_name(args)
    with docker_client(args) as docker:
        rows = _ps_rows(docker, name)
    if args.output == "json":
        print_json(rows)
        return EXIT_OK
    if not rows:
        print(f"project {name} has no containers")
        return EXIT_OK
    header = ("NAME", "SERVICE", "STATE", "HEALTH", "STATUS", "PORTS")
    print_table(
        [header]
        + [
            (r["name"], r["service"], r["state"], r["health"] or "-", r["status"], ", ".join(r["ports"]))
            for r in rows
        ]
    )
    return EXIT_OK


def _write_logs(
    docker: DockerClient, c: ObservedContainer, args: argparse.Namespace, *, prefix: bool
) -> None:
    """Stream one container's log to stdout, each line prefixed with its name when `prefix`."""
    out = sys.stdout.buffer
    for _stream, chunk in docker.container_logs(c.id, tail=args.tail, follow=args.follow):
        if prefix:
            for line in chunk.splitlines(keepends=True):
                out.write(f"{c.name} | ".encode() + line)
        else:
            out.write(chunk)
        out.flush()


def cmd_logs(args: argparse.Namespace) -> int:
    name = project_name(args)
    with docker_client(args) as docker:
        containers = [c for c in observe(docker).project_containers(name) if c.service == args.service]
        if not containers:
            raise UsageError(f"project {name} has no container for service {args.service!r}")
        for c in sorted(containers, key=lambda c: c.number):
            try:
                _write_logs(docker, c, args, prefix=len(containers) > 1)
            except NotFound:
                continue
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------


def _add_build_args(p: argparse.ArgumentParser) -> None:
    """``--build`` / ``--no-build``, as in ``docker compose up``."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--build",
        dest="build_mode",
        action="store_const",
        const=BuildMode.ALWAYS,
        help="build every service with build:, even when its content is already built",
    )
    group.add_argument(
        "--no-build",
        dest="build_mode",
        action="store_const",
        const=BuildMode.NEVER,
        help="build nothing: refuse the plan when a service's image is not built yet",
    )


def _build_mode(args: argparse.Namespace) -> BuildMode:
    return getattr(args, "build_mode", None) or BuildMode.AUTO


def _add_plan(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="show what apply would change, and why")
    add_project_args(p)
    add_trust_args(p)
    add_policy_args(p)
    p.add_argument("--output", choices=["text", "json"], default="text")
    p.add_argument("--exit-code", action="store_true", help="exit 2 when the plan is not empty")
    _add_build_args(p)
    p.set_defaults(func=cmd_plan)


def _add_apply(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("apply", help="converge the Docker host to the Compose files")
    add_project_args(p)
    add_trust_args(p)
    add_policy_args(p)
    p.add_argument("--parallel", type=int, default=8, help="operations run at once (default 8)")
    _add_build_args(p)
    p.add_argument(
        "--state-dir",
        help="where the applied state is recorded for `gitdock drift` (default: $GITDOCK_STATE_DIR, "
        "else /var/lib/gitdock as root, else $XDG_STATE_HOME/gitdock)",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for service_healthy / service_completed_successfully, and for --wait "
        "(default 120)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="then wait until every started container is healthy, or running and not restarted for "
        "--settle; exit 1 with the reason when one is not (as docker compose up --wait)",
    )
    p.add_argument("--settle", default="10s", help="settle time for containers without healthcheck (10s)")
    p.add_argument(
        "-V",
        "--renew-anon-volumes",
        action="store_true",
        help="recreate anonymous volumes instead of carrying the old containers' over",
    )
    p.set_defaults(func=cmd_apply)


def _add_inspection(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``down``, ``ps`` and ``logs``."""
    p = sub.add_parser("down", help="remove the project's containers and networks")
    add_project_args(p)
    p.add_argument(
        "--volumes",
        action="store_true",
        help="also remove the project's named volumes and its containers' anonymous ones",
    )
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("ps", help="list the project's containers")
    add_project_args(p)
    p.add_argument("--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("logs", help="show a service's logs")
    add_project_args(p)
    p.add_argument("service")
    p.add_argument("--tail", default="all", help="lines from the end of each log (default all)")
    p.add_argument("--follow", action="store_true", help="keep streaming")
    p.set_defaults(func=cmd_logs)


def add_compose_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``plan``, ``apply``, ``down``, ``ps`` and ``logs`` (the COMMANDS) to `sub`, in that order."""
    _add_plan(sub)
    _add_apply(sub)
    _add_inspection(sub)
    add_swarm_flags(sub)  # --swarm on plan, apply and down
