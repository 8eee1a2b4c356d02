"""The keys that open SOPS files' data keys: age identities and a GnuPG home.

The one seam between the spec loader and a key tool: ``Keyring.unwrap`` runs Debian's
``age`` (X25519 identities) or ``gpg`` (a PGP secret key in ``gnupghome``) as a local
subprocess, feeding the wrapped data key on stdin. The loader does no network I/O; these
local tools are the only processes it starts, and only for a file that is SOPS-encrypted.
Age identities reach ``age`` through a pipe (``/dev/fd/N``), never through a file.

Failures are translated here: a missing binary, a key that does not match, a tool that
hangs all become one ``SopsError`` naming the recipients tried, never a key or a value.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gitdock.specs.sops import KeyStanza, SopsError

__all__ = ["Keyring"]

_TIMEOUT = 30  # seconds; gpg may start its agent first


@dataclass(frozen=True)
class Keyring:
    """Age identities (the text of an age key file) and the GnuPG home to decrypt with.

    ``gnupghome`` None means gpg's own default (``$GNUPGHOME`` or ``~/.gnupg``).
    """

    age_identities: str = field(default="", repr=False)
    gnupghome: str | None = None
    # Why there are no age identities, when a named key file could not be read.
    age_problem: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Keyring:
        """As sops finds keys: ``SOPS_AGE_KEY``, ``SOPS_AGE_KEY_FILE``, else
        ``$XDG_CONFIG_HOME/sops/age/keys.txt``; ``GNUPGHOME`` for PGP."""
        parts, problem = [environ.get("SOPS_AGE_KEY", "")], ""
        key_file = environ.get("SOPS_AGE_KEY_FILE")
        if key_file:
            try:
                parts.append(Path(key_file).read_text())
            except OSError as exc:
                problem = f"cannot read SOPS_AGE_KEY_FILE {key_file}: {exc.strerror or exc}"
        else:
            config = environ.get("XDG_CONFIG_HOME") or os.path.join(environ.get("HOME", "~"), ".config")
            default = os.path.join(os.path.expanduser(config), "sops", "age", "keys.txt")
            with contextlib.suppress(OSError):  # no default key file is fine: PGP may open it
                parts.append(Path(default).read_text())
        identities = "\n".join(p for p in parts if p)
        return cls(identities, environ.get("GNUPGHOME") or None, "" if identities else problem)

    def unwrap(self, stanzas: Sequence[KeyStanza]) -> bytes:
        """The data key from the first stanza one of our keys opens. Raises SopsError."""
        reasons: list[str] = []
        for kind in ("age", "pgp"):  # sops' default order
            for stanza in (s for s in stanzas if s.kind == kind):
                try:
                    return self._age(stanza) if kind == "age" else self._gpg(stanza)
                except SopsError as exc:
                    reasons.append(f"{kind} {stanza.recipient or '?'}: {exc}")
        raise SopsError("no key opens the data key (" + "; ".join(reasons) + ")")

    def _age(self, stanza: KeyStanza) -> bytes:
        if not self.age_identities.strip():
            raise SopsError(self.age_problem or "no age identity (set SOPS_AGE_KEY_FILE or SOPS_AGE_KEY)")
        read_fd, write_fd = os.pipe()
        try:
            with os.fdopen(write_fd, "w") as pipe:
                pipe.write(self.age_identities + "\n")  # well under a pipe's buffer
            return _run(
                ["age", "--decrypt", "--identity", f"/dev/fd/{read_fd}"],
                stanza.enc.encode(),
                pass_fds=(read_fd,),
            )
        finally:
            os.close(read_fd)

    def _gpg(self, stanza: KeyStanza) -> bytes:
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "GNUPGHOME")}
        if self.gnupghome is not None:
            env["GNUPGHOME"] = self.gnupghome
        return _run(["gpg", "--batch", "--quiet", "--no-tty", "--decrypt"], stanza.enc.encode(), env=env)


def _run(
    argv: list[str], stdin: bytes, *, pass_fds: Sequence[int] = (), env: Mapping[str, str] | None = None
) -> bytes:
    try:
        done = subprocess.run(
            argv, input=stdin, capture_output=True, pass_fds=pass_fds, env=env, timeout=_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise SopsError(f"`{argv[0]}` is not installed") from None
    except subprocess.TimeoutExpired:
        raise SopsError(f"`{argv[0]}` did not answer within {_TIMEOUT}s") from None
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        raise SopsError(lines[-1][:200] if lines else f"exit status {done.returncode}")
    return done.stdout
