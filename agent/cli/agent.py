"""`gitdock agent` (run the agent) and the commands that talk to a running one.

    gitdock agent --config agent.yaml [--check-config]   (--check-config: validate and exit)
    gitdock status [NAME] [--output json]
    gitdock reconcile NAME          reconcile now and wait: exit 0 on success, 1 otherwise
    gitdock suspend NAME / resume NAME
    gitdock rollback NAME [REVISION]  re-apply a healthy revision and wait: exit 0 when rolled back
    gitdock history NAME [--limit N] [--output json]   (marks the live revision)

Client commands take ``--agent URL`` (default ``$GITDOCK_AGENT``, else http://127.0.0.1:9000)
and ``--token-file`` (default ``$GITDOCK_API_TOKEN_FILE``; ``$GITDOCK_API_TOKEN`` also works).
They talk to the agent through ``client.AgentClient``. Any error is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Final

from gitdock.agent.cli.client import AgentClient
from gitdock.agent.cli.common import EXIT_ERROR, EXIT_OK, print_json, print_table
from gitdock.specs.errors import GitdockError

__all__ = ["add_agent_commands"]

DEFAULT_AGENT_URL: Final = "http://127.0.0.1:9000"


def _token(args: argparse.Namespace) -> str | None:
    path = args.token_file or os.environ.get("GITDOCK_API_TOKEN_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise GitdockError(f"token file {path}: {exc.strerror or exc}") from None
    return os.environ.get("GITDOCK_API_TOKEN") or None


def _client(args: argparse.Namespace) -> AgentClient:
    return AgentClient(args.agent, _token(args))


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


# --- commands ------------------------------------------------------------------------------


def cmd_agent(args: argparse.Namespace) -> int:
    from gitdock.agent.config import load_config
    from gitdock.agent.server import run_agent

    logging.getLogger().setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for noisy in ("apscheduler", "httpx", "httpcore"):  # per-request / per-job lines
        logging.getLogger(noisy).setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    config = load_config(Path(args.config))
    if args.check_config:
        print(f"{args.config}: ok, {len(config.sources)} source(s)")
        return EXIT_OK
    return run_agent(config)


def _status_row(source: dict[str, Any]) -> tuple[str, ...]:
    ready = _condition(source, "Ready")
    message = (ready.get("message") or "").split("\n", 1)[0]
    return (
        source["name"],
        ready.get("status", "Unknown"),
        ready.get("reason", ""),
        _short(source["revision"]["applied"]),
        "yes" if source["suspended"] else "no",
        message[:100],
    )


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.name:
            sources = [client.request("GET", f"/api/v1/sources/{args.name}")]
        else:
            sources = client.request("GET", "/api/v1/sources")["sources"]
    if args.output == "json":
        print_json(sources[0] if args.name else sources)
        return EXIT_OK
    header = ("NAME", "READY", "REASON", "APPLIED", "SUSPENDED", "MESSAGE")
    print_table([header] + [_status_row(s) for s in sources])
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.request(
            "POST", f"/api/v1/sources/{args.name}/reconcile", params={"wait": "1"}, timeout=args.timeout
        )
    if args.output == "json":
        print_json(result)
    else:
        line = f"source {args.name}: {result['result']} ({result['reason']}) at {_short(result['revision'])}"
        print(line + (f": {result['message']}" if result.get("message") else ""))
    return EXIT_OK if result["result"] == "success" else EXIT_ERROR


def _toggle(args: argparse.Namespace, action: str) -> int:
    with _client(args) as client:
        status = client.request("POST", f"/api/v1/sources/{args.name}/{action}")
    if args.output == "json":
        print_json(status)
    else:
        print(f"source {args.name}: {'suspended' if status['suspended'] else 'resumed'}")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    return _toggle(args, "suspend")


def cmd_resume(args: argparse.Namespace) -> int:
    return _toggle(args, "resume")


def cmd_rollback(args: argparse.Namespace) -> int:
    """Re-apply a healthy revision (default: the one before the live one) and wait."""
    params = {"wait": "1", **({"revision": args.revision} if args.revision else {})}
    with _client(args) as client:
        result = client.request(
            "POST", f"/api/v1/sources/{args.name}/rollback", params=params, timeout=args.timeout
        )
    if args.output == "json":
        print_json(result)
    else:
        print(f"source {args.name}: {result['reason']}: {result['message']}")
    return EXIT_OK if result["reason"] == "RolledBack" else EXIT_ERROR


def _history_row(entry: dict[str, Any], live: str | None = None) -> tuple[str, ...]:
    summary = (entry.get("plan") or {}).get("summary") or {}
    changes = ", ".join(f"{k} {v}" for k, v in summary.items()) or "-"
    after = entry.get("live")
    return (
        entry["at"][:19],
        entry["trigger"],
        _short(entry["revision"]) + (" (live)" if live and entry["revision"] == live else ""),
        _short(after) if after else "-",
        entry["result"],
        entry["reason"],
        changes,
        str(entry["durationMs"]),
    )


def cmd_history(args: argparse.Namespace) -> int:
    with _client(args) as client:
        body = client.request(
            "GET", f"/api/v1/sources/{args.name}/history", params={"limit": str(args.limit)}
        )
        status = client.request("GET", f"/api/v1/sources/{args.name}")
    if args.output == "json":
        print_json(body["history"])
        return EXIT_OK
    live = status["revision"]["applied"]
    print(f"live revision: {_short(live) if live else '-'}")
    header = ("AT", "TRIGGER", "REVISION", "RUNNING AFTER", "RESULT", "REASON", "CHANGES", "MS")
    print_table([header] + [_history_row(h, live) for h in body["history"]])
    return EXIT_OK


# --- parser --------------------------------------------------------------------------------


def _client_args(p: argparse.ArgumentParser, *, output: bool = True) -> None:
    p.add_argument(
        "--agent",
        default=os.environ.get("GITDOCK_AGENT") or DEFAULT_AGENT_URL,
        help=f"agent URL (default: $GITDOCK_AGENT or {DEFAULT_AGENT_URL})",
    )
    p.add_argument("--token-file", help="file with the API token (default: $GITDOCK_API_TOKEN_FILE)")
    if output:
        p.add_argument("--output", choices=["text", "json"], default="text")


def add_agent_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agent``, ``status``, ``reconcile``, ``suspend``, ``resume``, ``rollback`` and
    ``history`` to `sub`."""
    p = sub.add_parser("agent", help="run the GitOps agent (long-lived)")
    p.add_argument("--config", required=True, help="agent configuration file (agent.yaml)")
    p.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    p.set_defaults(func=cmd_agent)

    p = sub.add_parser("status", help="show the agent's sources and their conditions")
    p.add_argument("name", nargs="?", help="one source (default: all)")
    _client_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("reconcile", help="reconcile a source now and wait for the result")
    p.add_argument("name")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    _client_args(p)
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("suspend", help="stop reconciling a source")
    p.add_argument("name")
    _client_args(p)
    p.set_defaults(func=cmd_suspend)

    p = sub.add_parser("resume", help="reconcile a suspended source again")
    p.add_argument("name")
    _client_args(p)
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("rollback", help="re-apply a revision that passed its health gate, and wait")
    p.add_argument("name")
    p.add_argument("revision", nargs="?", help="its sha or a prefix (default: the one before the live one)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    _client_args(p)
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("history", help="show a source's recorded reconciles, newest first")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20)
    _client_args(p)
    p.set_defaults(func=cmd_history)
