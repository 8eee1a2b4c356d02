"""The ``gitdock`` command line.

Exit codes: 0 success; 1 an error (bad spec, Docker unreachable, a name conflict, a failed
operation); 2 for ``plan --exit-code`` when the plan is not empty.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitdock.agent.applied_store import default_state_dir, store_applied
from gitdock.agent.cli.progress import Progress
from gitdock.runtime.converge import Outcome, converge, tear_down
from gitdock.runtime.docker import DockerClient, NotFound
from gitdock.runtime.execute import ExecutionFailed, OpStatus
from gitdock.runtime.observe import observe
from gitdock.specs.errors import GitdockError, SpecError
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.runtime.trust.resolve import TrustContext

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
EXIT_OK, EXIT_ERROR, EXIT_CHANGES = 0, 1, 2

log = logging.getLogger("gitdock")


def _files(args: argparse.Namespace) -> list[str]:
    if args.file:
        return list(args.file)
    for name in DEFAULT_FILES:
        if Path(name).is_file():
            return [name]
    raise UsageError(f"no Compose file given and none of {', '.join(DEFAULT_FILES)} in {os.getcwd()}")


class UsageError(GitdockError):
    """The command line itself is wrong."""


def load(args: argparse.Namespace) -> Project:
    """Load the Compose files, reusing the last validated load while none of them changed."""
    from gitdock.specs.cache import load_project_cached

    state_dir = Path(args.state_dir) if getattr(args, "state_dir", None) else default_state_dir()
    return load_project_cached(
        _files(args),
        state_dir / "load-cache",
        project_name=args.project_name,
        env_file=args.env_file,
        profiles=getattr(args, "profile", None) or None,
        ignore_build=getattr(args, "ignore_build", False),
    )


def project_name(args: argparse.Namespace) -> str:
    if args.project_name:
        return str(args.project_name)
    return load(args).name


def _docker(args: argparse.Namespace) -> DockerClient:
    return DockerClient(args.host)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def trust_context(args: argparse.Namespace) -> TrustContext | None:
    """The trust policy from --trust-policy or GITDOCK_TRUST_POLICY, if any."""
    path = args.trust_policy or os.environ.get("GITDOCK_TRUST_POLICY")
    if not path:
        return None
    from gitdock.agent.policy import load_trust_config

    return load_trust_config(path).context(Path(path).resolve().parent)


def cmd_plan(args: argparse.Namespace) -> int:
    project = load(args)
    trust = trust_context(args)
    with _docker(args) as docker:
        outcome = converge(project, docker, trust=trust, dry_run=True)
    plan = outcome.plan
    if args.output == "json":
        _print_json(plan.to_dict())
    elif plan.is_empty:
        print(f"project {project.name} is up to date: nothing to change")
        if plan.render():
            print(plan.render())
    else:
        print(plan.render())
    if args.exit_code and not plan.is_empty:
        return EXIT_CHANGES
    return EXIT_OK


def _report(outcome: Outcome, verb: str, name: str) -> int:
    plan = outcome.plan
    for line in plan.render_images():
        print(line)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if outcome.report is None:
        print(
            f"project {name}: nothing to {verb} ({outcome.api_calls} Docker API calls, "
            f"{outcome.mutating_calls} mutating)"
        )
        return EXIT_OK
    report = outcome.report
    done = sum(1 for r in report.results if r.status is OpStatus.DONE)
    if not report.ok:
        raise ExecutionFailed(report)
    print(f"project {name}: {done} operation(s) done in {report.seconds:.1f}s")
    return EXIT_OK


def _tracing_requested() -> bool:
    """True when any OTEL_* variable is set (and the SDK is not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return any(name.startswith("OTEL_") for name in os.environ)


def cmd_apply(args: argparse.Namespace) -> int:
    """Apply; with OTEL_* variables set, as one exported ``SYNC <project>`` trace.

    Without them the OpenTelemetry SDK is not even imported: a no-op apply is a short command.
    """
    if not _tracing_requested():
        project = load(args)
        return _apply(args, project, {"on_event": Progress()}, None)
    from gitdock.agent import telemetry as tm

    tm.setup_telemetry()
    from gitdock.specs.load import normalise_project_name

    guess = args.project_name or normalise_project_name(Path(_files(args)[0]).resolve().parent.name)
    with tm.sync_span(guess or "default") as sync:
        sync.span.set_attribute("gitdock.trigger", "cli")
        with tm.step_span(tm.Step.LOAD):
            project = load(args)
        if project.name != guess:  # the file's own `name:` decides
            sync.span.update_name(f"SYNC {project.name}")
            sync.span.set_attribute(tm.CICD_PIPELINE_NAME, project.name)
            sync.project = project.name
        return _apply(args, project, tm.converge_hooks(then=Progress()), sync.set_result)


def _apply(
    args: argparse.Namespace,
    project: Project,
    hooks: dict[str, Any],
    set_result: Callable[[str], None] | None,
) -> int:
    trust = trust_context(args)
    with _docker(args) as docker:
        outcome = converge(
            project,
            docker,
            trust=trust,
            concurrency=args.parallel,
            wait_timeout=args.wait_timeout,
            **hooks,
        )
        if outcome.report is None or outcome.report.ok:
            _store_applied(args, project, docker, outcome)
    if set_result is not None and outcome.report is not None and not outcome.report.ok:
        set_result("error" if outcome.report.transient else "failure")
    return _report(outcome, "change", project.name)


def _store_applied(
    args: argparse.Namespace, project: Project, docker: DockerClient, outcome: Outcome
) -> None:
    """Record what `gitdock drift` compares the host against later. A failure here is a warning:
    the apply itself succeeded."""
    state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    try:
        store_applied(project, docker, outcome, state_dir)
    except (GitdockError, OSError) as exc:
        print(
            f"warning: could not record the applied state in {state_dir}: {exc}; "
            "gitdock drift will not know this apply (set --state-dir or GITDOCK_STATE_DIR)",
            file=sys.stderr,
        )


def cmd_down(args: argparse.Namespace) -> int:
    name = project_name(args)
    with _docker(args) as docker:
        outcome = tear_down(name, docker, remove_volumes=args.volumes, on_event=Progress())
    return _report(outcome, "remove", name)


def _ps_rows(docker: DockerClient, name: str) -> list[dict[str, Any]]:
    observed = observe(docker)
    rows = []
    for c in sorted(observed.project_containers(name), key=lambda c: (c.service or "", c.number)):
        rows.append(
            {
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
        )
    return rows


def cmd_ps(args: argparse.Namespace) -> int:
    name = project_name(args)
    with _docker(args) as docker:
        rows = _ps_rows(docker, name)
    if args.output == "json":
        _print_json(rows)
        return EXIT_OK
    if not rows:
        print(f"project {name} has no containers")
        return EXIT_OK
    header = ("NAME", "SERVICE", "STATE", "HEALTH", "STATUS", "PORTS")
    table = [header] + [
        (r["name"], r["service"], r["state"], r["health"] or "-", r["status"], ", ".join(r["ports"]))
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    name = project_name(args)
    with _docker(args) as docker:
        containers = [c for c in observe(docker).project_containers(name) if c.service == args.service]
        if not containers:
            raise UsageError(f"project {name} has no container for service {args.service!r}")
        prefix = len(containers) > 1
        out = sys.stdout.buffer
        for c in sorted(containers, key=lambda c: c.number):
            try:
                for _stream, chunk in docker.container_logs(c.id, tail=args.tail, follow=args.follow):
                    if prefix:
                        for line in chunk.splitlines(keepends=True):
                            out.write(f"{c.name} | ".encode() + line)
                    else:
                        out.write(chunk)
                    out.flush()
            except NotFound:
                continue
    return EXIT_OK


def _add_project_args(p: argparse.ArgumentParser, *, files: bool = True) -> None:
    if files:
        p.add_argument("-f", "--file", action="append", help="Compose file (repeatable)")
        p.add_argument(
            "--env-file", help="file of variables for interpolation (default: .env beside the file)"
        )
        p.add_argument(
            "--profile",
            action="append",
            help="enable services of this profile (repeatable; default: $COMPOSE_PROFILES)",
        )
        p.add_argument(
            "--ignore-build",
            action="store_true",
            help="deploy services that have both build: and image: from the image, ignoring build:",
        )
    p.add_argument(
        "-p", "--project-name", help="project name (default: name: in the file, else its directory)"
    )


def _add_trust_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-policy",
        metavar="FILE",
        help="resolve every image to a digest and verify its signature by this policy "
        "(default: $GITDOCK_TRUST_POLICY; without one, images are used as tagged)",
    )


CORE_COMMANDS = frozenset({"plan", "apply", "down", "ps", "logs"})


def build_parser(*, core_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; ``core_only`` leaves out the agent, trust and drift commands,
    whose modules are slower to import, when the command run is not one of them."""
    parser = argparse.ArgumentParser(
        prog="gitdock", description="Declarative GitOps deployment of Compose projects to Docker."
    )
    parser.add_argument("--host", help="Docker host, unix:///path or tcp://host:port (default: $DOCKER_HOST)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plan", help="show what apply would change, and why")
    _add_project_args(p)
    _add_trust_args(p)
    p.add_argument("--output", choices=["text", "json"], default="text")
    p.add_argument("--exit-code", action="store_true", help="exit 2 when the plan is not empty")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="converge the Docker host to the Compose files")
    _add_project_args(p)
    _add_trust_args(p)
    p.add_argument("--parallel", type=int, default=8, help="operations run at once (default 8)")
    p.add_argument(
        "--state-dir",
        help="where the applied state is recorded for `gitdock drift` (default: $GITDOCK_STATE_DIR, "
        "else /var/lib/gitdock as root, else $XDG_STATE_HOME/gitdock)",
    )
    p.add_argument(
        "--wait-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for service_healthy / service_completed_successfully (default 120)",
    )
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("down", help="remove the project's containers and networks")
    _add_project_args(p)
    p.add_argument("--volumes", action="store_true", help="also remove the project's named volumes")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("ps", help="list the project's containers")
    _add_project_args(p)
    p.add_argument("--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_ps)

    p = sub.add_parser("logs", help="show a service's logs")
    _add_project_args(p)
    p.add_argument("service")
    p.add_argument("--tail", default="all", help="lines from the end of each log (default all)")
    p.add_argument("--follow", action="store_true", help="keep streaming")
    p.set_defaults(func=cmd_logs)

    if core_only:
        return parser
    try:
        from gitdock.agent.cli.trust import add_trust_commands
    except ImportError:  # the trust commands ship with the registry module
        pass
    else:
        add_trust_commands(sub)
    from gitdock.agent.cli.drift import add_drift_commands  # drift

    add_drift_commands(sub)
    from gitdock.agent.cli.agent import (
        add_agent_commands,  # agent, status, reconcile, suspend, resume, history
    )

    add_agent_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((w for w in words if not w.startswith("-")), None)
    # `--host X` takes a value that is not the command; only take the shortcut when it is plain.
    plain = command in CORE_COMMANDS and "--host" not in words[: words.index(command)]
    parser = build_parser(core_only=plain)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except SpecError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
    except GitdockError as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
