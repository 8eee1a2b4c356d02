"""Real signing keys and real signed commits for tests: ssh-keygen, gpg and git's own `commit -S`.

`Keys` makes SSH (ed25519) and OpenPGP (ed25519, no passphrase) keys in a directory, with the
OpenPGP secret key in a private GNUPGHOME whose gpg-agent `close()` stops. `SigningRepo` is a
working clone of a bare repository that commits with `git commit -S` (SSH or OpenPGP) or
unsigned, and pushes (or force-pushes) to the bare repository, which is what the agent fetches.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

GIT = shutil.which("git") or "git"
GPG = shutil.which("gpg") or "gpg"
SSH_KEYGEN = shutil.which("ssh-keygen") or "ssh-keygen"


@dataclass
class SshKey:
    private: Path
    principal: str

    @property
    def public(self) -> str:
        kind, blob = Path(f"{self.private}.pub").read_text().split()[:2]
        return f"{kind} {blob}"

    @property
    def fingerprint(self) -> str:
        out = subprocess.run(
            [SSH_KEYGEN, "-lf", f"{self.private}.pub"], capture_output=True, text=True, check=True
        )
        return out.stdout.split()[1]

    def allowed_line(self, options: str = "") -> str:
        return f"{self.principal} {options + ' ' if options else ''}{self.public}\n"


@dataclass
class GpgKey:
    uid: str
    fingerprint: str
    public: Path  # armored export


@dataclass
class Keys:
    """Key material made in `root` for one test."""

    root: Path
    gnupghome: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.gnupghome = self.root / "gnupg"
        self.gnupghome.mkdir(mode=0o700, exist_ok=True)

    def ssh(self, name: str, principal: str) -> SshKey:
        path = self.root / name
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", principal, "-f", str(path)], check=True
        )
        return SshKey(path, principal)

    def gpg(self, name: str, email: str) -> GpgKey:
        uid = f"{name} <{email}>"
        env = {**os.environ, "GNUPGHOME": str(self.gnupghome)}
        base = [GPG, "--batch", "--passphrase", ""]
        subprocess.run(
            [*base, "--quick-gen-key", uid, "ed25519", "sign", "never"],
            env=env,
            check=True,
            capture_output=True,
        )
        listing = subprocess.run(
            [GPG, "--batch", "--with-colons", "--list-keys", email],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        public = self.root / f"{name}.asc"
        exported = subprocess.run(
            [GPG, "--batch", "--armor", "--export", fingerprint], env=env, check=True, capture_output=True
        )
        public.write_bytes(exported.stdout)
        return GpgKey(uid, fingerprint, public)

    def close(self) -> None:
        """Stop the gpg-agent that signing started in the private GNUPGHOME."""
        subprocess.run(
            ["gpgconf", "--homedir", str(self.gnupghome), "--kill", "all"], check=False, capture_output=True
        )


class SigningRepo:
    """A bare repository (`url`) and a working clone that commits, signs and pushes with git."""

    def __init__(self, root: Path, keys: Keys) -> None:
        self.bare = root / "origin.git"
        self.work = root / "work"
        self.keys = keys
        self._tick = 0
        self._git_bare("init", "-q", "--bare", "-b", "main", str(self.bare))
        self._git_bare("init", "-q", "-b", "main", str(self.work))
        self.git("remote", "add", "origin", str(self.bare))

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def _env(self) -> dict[str, str]:
        self._tick += 1
        when = f"{1_700_000_000 + self._tick} +0000"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.keys.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GNUPGHOME": str(self.keys.gnupghome),
            "GIT_AUTHOR_DATE": when,
            "GIT_COMMITTER_DATE": when,
        }

    def _git_bare(self, *args: str) -> None:
        subprocess.run([GIT, *args], env=self._env(), check=True, capture_output=True)

    def git(self, *args: str) -> str:
        ident = [
            "-c",
            "user.name=Gitdock Test",
            "-c",
            "user.email=test@gitdock.invalid",
            "-c",
            "commit.gpgsign=false",
        ]
        proc = subprocess.run(
            [GIT, "-C", str(self.work), *ident, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout.strip()

    def commit(
        self,
        files: dict[str, str],
        message: str = "update",
        *,
        ssh: SshKey | None = None,
        gpg: GpgKey | None = None,
        push: bool = True,
    ) -> str:
        """Write `files` (the whole tree), commit (signed with `ssh` or `gpg`, else unsigned), push."""
        for old in self.git("ls-files").splitlines():
            if old not in files:
                (self.work / old).unlink()
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "-A")
        sign: list[str] = []
        if ssh is not None:
            sign = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={ssh.private}", "commit", "-S"]
        elif gpg is not None:
            sign = ["-c", "gpg.format=openpgp", "-c", f"user.signingkey={gpg.fingerprint}", "commit", "-S"]
        else:
            sign = ["commit"]
        self.git(*sign, "-q", "--allow-empty", "-m", message)
        if push:
            self.push()
        return self.git("rev-parse", "HEAD")

    def push(self, force: bool = False) -> None:
        self.git("push", "-q", *(["--force"] if force else []), "origin", "HEAD:refs/heads/main")

    def rewrite(self, to: str | None = None) -> None:
        """Start history again: from commit `to` (a reset), or from nothing (an orphan branch)."""
        if to is None:
            self.git("checkout", "-q", "--orphan", f"rewrite-{self._tick}")
            self.git("rm", "-rfq", "--ignore-unmatch", ".")
        else:
            self.git("reset", "-q", "--hard", to)
