"""How one service's recreates are ordered: stop-first or start-first, in batches. Pure.

Stop-first is the default, as in Compose: the old container stops, the replacement starts
and is seen running, else it is removed and the old one started again. A service asks for
start-first with ``deploy.update_config.order: start-first``; it is honoured when two of its
containers can run side by side (no fixed host port, no ``container_name``, no static
address): the replacement starts and passes its health gate before the old one stops. A
writable volume is allowed with a warning (two processes share the data for a moment).

With ``update_config`` set, replicas are recreated ``parallelism`` at a time: each recreate
of a batch waits for every recreate of the batch before (``delay`` seconds after it), so a
start-first service never has fewer than its replica count running. On a failure the batches
after it are skipped (``pause``, the default), run anyway (``continue``: the ordering edges
are order-only), or the replicas already replaced are put back (``rollback``: their old
containers are kept, stopped, until every replica of the service is replaced).
"""

from __future__ import annotations

from dataclasses import dataclass

from gitdock.runtime.plan.context import Planning
from gitdock.specs.model import FailureAction, Service, UpdateConfig, UpdateOrder


@dataclass(frozen=True)
class Rollout:
    """What one recreate of a service gets from its update config."""

    start_first: bool = False
    deps: tuple[int, ...] = ()  # the recreates of the batch before
    after: tuple[int, ...] = ()  # deps whose failure does not skip this one (``continue``)
    undo: tuple[int, ...] = ()  # earlier recreates to put back if this one fails (``rollback``)
    keep_old: bool = False  # retire the old container (stopped) instead of removing it
    delay: float = 0.0
    monitor: float | None = None
    failure_action: FailureAction | None = None
    suffix: str = ""  # for the cause: " (start-first)"


def pinned_by(svc: Service) -> str | None:
    """Why two containers of ``svc`` cannot run at once, or None: something only one can hold."""
    if svc.container_name:
        return "it sets container_name"
    if any(port.published for port in svc.ports):
        return "it publishes a fixed host port"
    if any(a.ipv4_address or a.ipv6_address or a.mac_address for _, a in svc.networks):
        return "it sets a static address"
    return None


def next_rollout(p: Planning, svc: Service) -> Rollout:
    """The ordering of the next recreate of ``svc``; records it (call once per recreate op,
    then ``record_rollout`` with the op's id)."""
    config = svc.update_config
    if config is None:
        return Rollout()
    start_first = config.order is UpdateOrder.START_FIRST and _may_start_first(p, svc)
    done = p.rollouts.setdefault(svc.name, [])
    size = config.parallelism or svc.replicas or 1
    batch = len(done) // size
    previous = tuple(done[(batch - 1) * size : batch * size]) if batch else ()
    action = config.failure_action
    return Rollout(
        start_first=start_first,
        deps=previous,
        after=previous if action is FailureAction.CONTINUE else (),
        undo=tuple(done[: batch * size]) if action is FailureAction.ROLLBACK else (),
        keep_old=action is FailureAction.ROLLBACK and svc.replicas > 1,
        delay=config.delay if batch else 0.0,
        monitor=config.monitor,
        failure_action=action,
        suffix=f" ({_describe(config, start_first)})",
    )


def record_rollout(p: Planning, svc: Service, op: int) -> None:
    if svc.update_config is not None:
        p.rollouts.setdefault(svc.name, []).append(op)


def _describe(config: UpdateConfig, start_first: bool) -> str:
    text = "start-first" if start_first else "stop-first"
    if config.failure_action is not FailureAction.PAUSE:
        text += f", {config.failure_action.value} on failure"
    return text


def _may_start_first(p: Planning, svc: Service) -> bool:
    """Start-first unless something pins the service (a warning says so, once per service)."""
    reason = pinned_by(svc)
    if reason is not None:
        _warn_once(p, f"service {svc.name}: update_config.order start-first ignored: {reason}")
        return False
    if any(m.type in ("volume", "bind") and not m.read_only for m in svc.mounts):
        _warn_once(
            p,
            f"service {svc.name}: start-first runs the old and new container on the same writable "
            "volume for a moment",
        )
    return True


def _warn_once(p: Planning, warning: str) -> None:
    if warning not in p.warnings:
        p.warnings.append(warning)
