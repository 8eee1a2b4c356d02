"""systemd's notify protocol (sd_notify(3)), so the agent can run as a `Type=notify` unit.

The service manager passes ``$NOTIFY_SOCKET``, an AF_UNIX datagram socket (a path, or ``@name``
in the abstract namespace); each notification is one datagram of ``KEY=VALUE`` lines:
``READY=1`` once serving, ``STOPPING=1`` when shutting down, ``WATCHDOG=1`` at least every
``$WATCHDOG_USEC`` microseconds (only when ``$WATCHDOG_PID`` is unset or names this process).

Without ``$NOTIFY_SOCKET`` every call is a no-op returning False, so the agent behaves the same
outside systemd. A send that fails is logged at debug level and returns False: a missing
service manager never stops the agent. Standard library only.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "socket_address", "watchdog_interval"]

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes | None:
    """The address to send to: a filesystem path, or abstract bytes for ``@name``; None if unset."""
    if not value or not (value.startswith("/") or value.startswith("@")):
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``$WATCHDOG_USEC``), or None when not asked for."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and owner != str(pid):
        return None
    return int(usec) / 1_000_000 / 2


class Notifier:
    """Sends notifications to the service manager; every method returns whether one was sent."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env.get("NOTIFY_SOCKET", ""))
        self.interval = watchdog_interval(env, os.getpid()) if self.address is not None else None
        self._clock = clock
        self._last_ping: float | None = None

    @property
    def is_enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines."""
        if self.address is None:
            return False
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self.address)
        except OSError as exc:
            log.debug("sd_notify %r: %s", fields, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1 (and STATUS= when given): the unit's start-up is complete."""
        fields = ["READY=1"] + ([f"STATUS={status}"] if status else [])
        self._last_ping = self._clock()
        return self.notify(*fields)

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def tick(self) -> bool:
        """WATCHDOG=1 when half the watchdog interval has passed since the last ping; call it often."""
        if self.interval is None:
            return False
        now = self._clock()
        if self._last_ping is not None and now - self._last_ping < self.interval:
            return False
        self._last_ping = now
        return self.notify("WATCHDOG=1")
