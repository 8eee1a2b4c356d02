"""A second, private dockerd for tests that must restart the daemon.

The shared dockerd is never restarted. This one runs in its own network namespace (so its
bridge and iptables rules never touch the host's docker0), with its own socket, data root,
exec root and pidfile under /tmp, and ``--live-restore`` so its containers survive a restart.
``close()`` removes everything it made: containers, the daemon, mounts, directories, the
namespace. Nothing here imports gitdock. Needs root, ``ip`` and ``nsenter``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .docker import TEST_IMAGE, ping_docker


class SecondDockerd:
    """Start with ``start()``; ``restart()`` restarts only this daemon; ``close()`` cleans up."""

    def __init__(self, tag: str | None = None, *, live_restore: bool = True) -> None:
        """``live_restore=False`` for a Swarm node: Swarm mode refuses ``--live-restore``."""
        self.tag = tag or f"gdx{secrets.token_hex(3)}"
        self.live_restore = live_restore
        self.netns = self.tag
        self.socket = Path(f"/tmp/{self.tag}.sock")
        self.data_root = Path(f"/tmp/{self.tag}-data")
        self.exec_root = Path(f"/tmp/{self.tag}-exec")
        self.pidfile = Path(f"/tmp/{self.tag}.pid")
        self.log = Path(f"/tmp/{self.tag}.log")
        self.host = f"unix://{self.socket}"
        self._netns_added = False
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def unavailable_reason() -> str | None:
        if os.geteuid() != 0:
            return "a second dockerd needs root"
        missing = [tool for tool in ("dockerd", "nsenter", "ip") if shutil.which(tool) is None]
        return f"missing tools: {', '.join(missing)}" if missing else None

    def docker(self, *args: str, input: bytes | None = None, timeout: float = 60) -> str:
        proc = subprocess.run(
            ["docker", "-H", self.host, *args], input=input, capture_output=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"docker -H {self.host} {' '.join(args)}: {proc.stderr.decode().strip()}")
        return proc.stdout.decode()

    def start(self, timeout: float = 60) -> SecondDockerd:
        if not self._netns_added:
            subprocess.run(["ip", "netns", "add", self.netns], check=True, capture_output=True)
            self._netns_added = True
            subprocess.run(
                ["nsenter", f"--net=/run/netns/{self.netns}", "ip", "link", "set", "lo", "up"],
                check=True,
                capture_output=True,
            )
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/run/netns/{self.netns}",
                    "dockerd",
                    "--host",
                    self.host,
                    "--data-root",
                    str(self.data_root),
                    "--exec-root",
                    str(self.exec_root),
                    "--pidfile",
                    str(self.pidfile),
                    *(["--live-restore"] if self.live_restore else []),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while ping_docker(self.host, timeout=1.0) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"second dockerd did not answer within {timeout}s; see {self.log}")
            time.sleep(0.1)
        return self

    def load_test_image(self, image: str = TEST_IMAGE) -> None:
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True, timeout=120).stdout
        self.docker("load", input=saved, timeout=120)

    def _pid(self) -> int | None:
        # nsenter execs dockerd, so the child we started is the daemon (and we must reap it).
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM the daemon and wait for it to exit (containers keep running: live-restore)."""
        if self._proc is None or self._pid() is None:
            return
        os.kill(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Remove containers, stop the daemon, unmount, delete its directories and namespace."""
        if self._pid() is not None:
            with contextlib.suppress(Exception):
                ids = self.docker("ps", "-aq").split()
                if ids:
                    self.docker("rm", "--force", *ids)
            self.stop()
        mounts = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/mounts").read_text().splitlines():
                target = line.split()[1]
                if target.startswith((str(self.data_root), str(self.exec_root))):
                    mounts.append(target)
        for target in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
        for path in (self.data_root, self.exec_root):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.socket, self.pidfile, self.log):
            path.unlink(missing_ok=True)
        if self._netns_added:
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, check=False)
            self._netns_added = False

    def __enter__(self) -> SecondDockerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
