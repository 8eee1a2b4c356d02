"""`gitdock agent` (run the agent) and the commands that talk to a running one.

    gitdock agent --config agent.yaml
    gitdock status [NAME] [--output json]
    gitdock reconcile NAME          reconcile now and wait: exit 0 on success, 1 otherwise
    gitdock suspend NAME / resume NAME
    gitdock history NAME [--limit N] [--output json]

Client commands take ``--agent URL`` (default ``$GITDOCK_AGENT``, else http://127.0.0.1:9000)
and ``--token-file`` (default ``$GITDOCK_API_TOKEN_FILE``; ``$GITDOCK_API_TOKEN`` also works).
Any error is one line on stderr and exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Final

import httpx

from gitdock.specs.errors import GitdockError

__all__ = ["AgentClient", "AgentUnreachable", "add_agent_commands"]

DEFAULT_AGENT_URL: Final = "http://127.0.0.1:9000"
EXIT_OK, EXIT_ERROR = 0, 1


class AgentUnreachable(GitdockError):
    """The agent's API cannot be reached."""


class AgentRequestFailed(GitdockError):
    """The agent answered with an error."""


class AgentClient:
    """A small client for the agent's HTTP API."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        headers = {"User-Agent": "gitdock"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, *, params: dict[str, str] | None = None, timeout: float | None = None
    ) -> Any:
        """JSON body of a 2xx answer. Raises AgentUnreachable or AgentRequestFailed."""
        try:
            resp = self._http.request(
                method,
                path,
                params=params,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.HTTPError as exc:
            raise AgentUnreachable(
                f"cannot reach the agent at {self.url}: {exc or type(exc).__name__}"
            ) from None
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text.strip()[:200]}
        if resp.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise AgentRequestFailed(
                f"{method} {path}: HTTP {resp.status_code}: {message or resp.reason_phrase}"
            )
        return body


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


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


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
    return run_agent(config)


def cmd_status(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        if args.name:
            sources = [client.request("GET", f"/api/v1/sources/{args.name}")]
        else:
            sources = client.request("GET", "/api/v1/sources")["sources"]
    finally:
        client.close()
    if args.output == "json":
        _print_json(sources[0] if args.name else sources)
        return EXIT_OK
    rows = [("NAME", "READY", "REASON", "APPLIED", "SUSPENDED", "MESSAGE")]
    for s in sources:
        ready = _condition(s, "Ready")
        message = (ready.get("message") or "").split("\n", 1)[0]
        rows.append(
            (
                s["name"],
                ready.get("status", "Unknown"),
                ready.get("reason", ""),
                _short(s["revision"]["applied"]),
                "yes" if s["suspended"] else "no",
                message[:100],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        result = client.request(
            "POST", f"/api/v1/sources/{args.name}/reconcile", params={"wait": "1"}, timeout=args.timeout
        )
    finally:
        client.close()
    if args.output == "json":
        _print_json(result)
    else:
        line = f"source {args.name}: {result['result']} ({result['reason']}) at {_short(result['revision'])}"
        print(line + (f": {result['message']}" if result.get("message") else ""))
    return EXIT_OK if result["result"] == "success" else EXIT_ERROR


def _toggle(args: argparse.Namespace, action: str) -> int:
    client = _client(args)
    try:
        status = client.request("POST", f"/api/v1/sources/{args.name}/{action}")
    finally:
        client.close()
    if args.output == "json":
        _print_json(status)
    else:
        print(f"source {args.name}: {'suspended' if status['suspended'] else 'resumed'}")
    return EXIT_OK


def cmd_suspend(args: argparse.Namespace) -> int:
    return _toggle(args, "suspend")


def cmd_resume(args: argparse.Namespace) -> int:
    return _toggle(args, "resume")


def cmd_history(args: argparse.Namespace) -> int:
    client = _client(args)
    try:
        body = client.request(
            "GET", f"/api/v1/sources/{args.name}/history", params={"limit": str(args.limit)}
        )
    finally:
        client.close()
    if args.output == "json":
        _print_json(body["history"])
        return EXIT_OK
    rows = [("AT", "TRIGGER", "REVISION", "RESULT", "REASON", "CHANGES", "MS")]
    for h in body["history"]:
        summary = (h.get("plan") or {}).get("summary") or {}
        changes = ", ".join(f"{k} {v}" for k, v in summary.items()) or "-"
        rows.append(
            (
                h["at"][:19],
                h["trigger"],
                _short(h["revision"]),
                h["result"],
                h["reason"],
                changes,
                str(h["durationMs"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
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


def add_agent_commands(sub: Any) -> None:
    """Add ``agent``, ``status``, ``reconcile``, ``suspend``, ``resume`` and ``history`` to `sub`."""
    p = sub.add_parser("agent", help="run the GitOps agent (long-lived)")
    p.add_argument("--config", required=True, help="agent configuration file (agent.yaml)")
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

    p = sub.add_parser("history", help="show a source's recorded reconciles, newest first")
    p.add_argument("name")
    p.add_argument("--limit", type=int, default=20)
    _client_args(p)
    p.set_defaults(func=cmd_history)


def main() -> None:  # pragma: no cover - convenience for `python -m gitdock.agent.cli.agent`
    from gitdock.agent.cli.main import main as cli_main

    sys.exit(cli_main())
