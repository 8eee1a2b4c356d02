"""The signer tools seam: ``ssh-keygen -Y`` for SSH commit signatures, ``gpg`` for OpenPGP.

The only module that runs them. Both run with a minimal environment (``PATH``, ``LC_ALL=C``:
none of the agent's variables, so none of its secrets, reach them), a timeout, and their
failures translated here: a missing binary, a crash or a timeout is ``SignerUnavailable`` (a
retry may fix it); what the tool says about a signature is parsed by the pure functions of
``agent.commits`` into a ``Signer`` or a refusal.

``CommitVerifier`` is one source's ``verify:``: it picks the commits of a new revision to
check (``commits.select_commits`` over ``GitCache.walk_new_commits``), verifies each with the
tool its format needs, and remembers the commits it verified, so a poll that finds the same
head costs reading the key files and nothing more. The memory is dropped when a key file
changes. OpenPGP keys live in a private GNUPGHOME (a 0700 temporary directory, one per
verifier) into which only the configured public keys are imported, so the host's own keyring
and trust settings play no part; it is rebuilt when a key file changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gitdock.agent.commits import (
    BadCommitSignature,
    CommitVerificationError,
    SignatureFormat,
    Signer,
    SignerUnavailable,
    SigningKeysError,
    UnsignedCommit,
    UntrustedSigner,
    VerifyMode,
    detect_format,
    judge_gpg_status,
    parse_allowed_signers,
    parse_gpg_status,
    parse_ssh_signature,
    parse_ssh_verify_output,
    select_commits,
    verify_time,
)
from gitdock.agent.git import Ancestry, CommitSignature, GitCache, Revision

__all__ = ["CommitVerifier", "GpgVerifier", "SshVerifier", "VerifiedRevision"]

TOOL_TIMEOUT: Final = 30.0
MEMORY_LIMIT: Final = 10_000  # verified commits remembered per source
_PACKAGES: Final = {"ssh-keygen": "openssh-client", "gpg": "gnupg"}
_QUIET_LINES: Final = frozenset({"No principal matched.", "Could not verify signature."})


def _run(
    args: Sequence[str], *, data: bytes | None = None, timeout: float = TOOL_TIMEOUT
) -> subprocess.CompletedProcess[bytes]:
    """Run a signer tool; its failure to run becomes SignerUnavailable."""
    tool = Path(args[0]).name
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    try:
        return subprocess.run(
            list(args), input=data, capture_output=True, timeout=timeout, check=False, env=env
        )
    except FileNotFoundError:
        package = _PACKAGES.get(tool, tool)
        raise SignerUnavailable(f"{tool}: not installed (Debian package {package})") from None
    except subprocess.TimeoutExpired:
        raise SignerUnavailable(f"{tool}: no answer within {timeout:g}s") from None
    except OSError as exc:
        raise SignerUnavailable(f"{tool}: cannot run: {exc.strerror or exc}") from None


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SigningKeysError(f"{what} {path}: {exc.strerror or exc}") from None


def _reasons(stderr: bytes, path: Path) -> str:
    """ssh-keygen's explanation lines, with the allowed_signers path shortened to its name."""
    lines = [
        line.strip().replace(str(path), path.name)
        for line in stderr.decode(errors="replace").splitlines()
        if line.strip() and line.strip() not in _QUIET_LINES
    ]
    return "; ".join(lines[-3:])


# --- SSH -----------------------------------------------------------------------------------


class SshVerifier:
    """SSH commit signatures against one allowed_signers file, as ``git verify-commit`` does.

    The principal is found with ``ssh-keygen -Y find-principals`` and the signature checked
    with ``ssh-keygen -Y verify -n git``; key validity (valid-after/valid-before) is judged at
    the commit's committer time, like git.
    """

    def __init__(
        self, allowed_signers: Path, *, tool: str = "ssh-keygen", timeout: float = TOOL_TIMEOUT
    ) -> None:
        self.allowed_signers = allowed_signers
        self.tool = tool
        self.timeout = timeout

    def load(self) -> bytes:
        """The file's bytes, after checking every line parses. Raises SigningKeysError."""
        data = _read(self.allowed_signers, "verify.keys.ssh")
        parse_allowed_signers(data.decode(errors="replace"), str(self.allowed_signers))
        return data

    def verify(self, commit: CommitSignature) -> Signer:
        """The signer of `commit`, or UntrustedSigner / BadCommitSignature saying why not."""
        short = commit.sha[:12]
        try:
            parsed = parse_ssh_signature(commit.signature)
        except ValueError as exc:
            raise BadCommitSignature(f"commit {short}: malformed SSH signature: {exc}", commit.sha) from None
        key = f"SSH key {parsed.fingerprint} ({parsed.key_type})"
        if parsed.namespace != "git":
            raise BadCommitSignature(
                f"commit {short}: signed by {key} for namespace {parsed.namespace!r}, not 'git'", commit.sha
            )
        when = f"-Overify-time={verify_time(commit.committed_at)}"
        with tempfile.TemporaryDirectory(prefix="gitdock-sshsig-") as tmp:
            sig = Path(tmp) / "commit.sig"
            sig.write_bytes(commit.signature)
            found = self._ssh(
                ["-Y", "find-principals", "-f", str(self.allowed_signers), "-s", str(sig), when]
            )
            principals = [p for p in found.stdout.decode(errors="replace").splitlines() if p.strip()]
            if found.returncode != 0 or not principals:
                why = _reasons(found.stderr, self.allowed_signers)
                raise UntrustedSigner(
                    f"commit {short}: signed by {key}, which {self.allowed_signers.name} does not allow"
                    + (f" ({why})" if why else ""),
                    commit.sha,
                )
            return self._verify_principals(commit, sig, principals, key, when)

    def _verify_principals(
        self, commit: CommitSignature, sig: Path, principals: list[str], key: str, when: str
    ) -> Signer:
        why = ""
        for principal in principals:
            args = ["-Y", "verify", "-f", str(self.allowed_signers), "-I", principal, "-n", "git"]
            proc = self._ssh([*args, "-s", str(sig), when], data=commit.payload)
            good = parse_ssh_verify_output(proc.stdout.decode(errors="replace"))
            if proc.returncode == 0 and good is not None:
                return Signer(SignatureFormat.SSH, principal, good[1])
            why = _reasons(proc.stderr, self.allowed_signers) or why
        raise BadCommitSignature(
            f"commit {commit.sha[:12]}: the signature by {key} for {', '.join(principals)} does not verify"
            + (f": {why}" if why else ""),
            commit.sha,
        )

    def _ssh(self, args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return _run([self.tool, *args], data=data if data is not None else b"", timeout=self.timeout)


# --- OpenPGP -------------------------------------------------------------------------------


class GpgVerifier:
    """OpenPGP commit signatures against the configured public keys, in a private GNUPGHOME.

    Thread-safe (one gpg at a time per home). ``close`` removes the home.
    """

    def __init__(
        self, key_files: Sequence[Path], *, tool: str = "gpg", timeout: float = TOOL_TIMEOUT
    ) -> None:
        self.key_files = tuple(key_files)
        self.tool = tool
        self.timeout = timeout
        self._home: Path | None = None
        self._digest = b""
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return "verify.keys.gpg (" + ", ".join(p.name for p in self.key_files) + ")"

    def load(self) -> bytes:
        """The key files' bytes; a change (or the first call) rebuilds the keyring."""
        blobs = [_read(path, "verify.keys.gpg") for path in self.key_files]
        digest = hashlib.sha256(b"\0".join(blobs)).digest()
        with self._lock:
            if digest != self._digest or self._home is None:
                self._rebuild()
                self._digest = digest
        return b"".join(blobs)

    def _rebuild(self) -> None:
        """A fresh 0700 home with only the configured keys. Caller holds the lock."""
        self._remove_home()
        home = Path(tempfile.mkdtemp(prefix="gitdock-gnupg-"))  # mkdtemp: mode 0700
        self._home = home
        for path in self.key_files:
            proc = self._gpg(["--import-options", "import-minimal", "--import", str(path)])
            status = proc.stdout.decode(errors="replace")
            if "[GNUPG:] IMPORT_OK" not in status:
                said = proc.stderr.decode(errors="replace").strip().splitlines()
                raise SigningKeysError(
                    f"verify.keys.gpg {path}: no OpenPGP public key imported"
                    + (f" ({said[-1].removeprefix('gpg: ')})" if said else "")
                )

    def verify(self, commit: CommitSignature) -> Signer:
        """The signer of `commit`, or UntrustedSigner / BadCommitSignature saying why not."""
        with self._lock:
            if self._home is None:
                raise SigningKeysError("verify.keys.gpg: the keyring is not loaded")
            sig = self._home / "commit.sig"
            sig.write_bytes(commit.signature)
            proc = self._gpg(["--verify", str(sig), "-"], data=commit.payload)
        return judge_gpg_status(
            parse_gpg_status(proc.stdout.decode(errors="replace")), commit.sha, self.label
        )

    def close(self) -> None:
        with self._lock:
            self._remove_home()

    def _remove_home(self) -> None:
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None

    def _gpg(self, args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        assert self._home is not None
        base = [self.tool, "--homedir", str(self._home), "--batch", "--no-tty", "--no-autostart"]
        return _run(
            [*base, "--status-fd", "1", *args], data=data if data is not None else b"", timeout=self.timeout
        )


# --- one source's verification -------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedRevision:
    """What the verification of one revision found: who signed the head, and what was checked."""

    sha: str
    signer: Signer
    checked: int  # commits whose signatures were checked (the head included)
    ancestry: Ancestry | None  # None in mode head
    base: str | None

    def describe(self) -> str:
        text = f"commit {self.sha[:12]} signed by {self.signer.describe()}"
        if self.checked > 1 and self.base:
            text += f"; {self.checked} commits since {self.base[:12]} verified"
        return text


class CommitVerifier:
    """One source's ``verify:``: which commits must be signed, by which keys.

    Not re-entrant per source (the scheduler runs one reconcile per source at a time).
    """

    def __init__(
        self,
        mode: VerifyMode,
        *,
        ssh: SshVerifier | None = None,
        gpg: GpgVerifier | None = None,
        max_commits: int = 100,
    ) -> None:
        if ssh is None and gpg is None:
            raise ValueError("a CommitVerifier needs SSH or OpenPGP keys")
        self.mode, self.ssh, self.gpg, self.max_commits = mode, ssh, gpg, max_commits
        self._keys = b""
        self._verified: dict[str, Signer] = {}
        self.tool_runs = 0  # verifications that ran a tool (a bench proves the memory works)

    def verify_revision(self, cache: GitCache, revision: Revision, base: str | None) -> VerifiedRevision:
        """Verify the commits `revision` brings since `base` (the deployed revision) per the mode.

        Raises a CommitVerificationError naming the commit and the signer or reason,
        SigningKeysError for unreadable keys, SignerUnavailable when a tool cannot run.
        """
        self._load_keys()
        walk = (
            cache.walk_new_commits(revision, base, self.max_commits) if self.mode is VerifyMode.ALL else None
        )
        shas = select_commits(
            self.mode,
            revision.sha,
            walk.shas if walk else (),
            walk.complete if walk else True,
            self.max_commits,
        )
        signer: Signer | None = None
        for index, sha in enumerate(shas, 1):
            try:
                signer = self._verify_commit(cache, revision, sha)
            except CommitVerificationError as exc:
                if sha == revision.sha or walk is None or walk.base is None:
                    raise
                where = f"{index} of {len(shas)} commits since {walk.base[:12]}"
                raise type(exc)(f"{exc} (the head {revision.sha[:12]} brings it: {where})", sha) from None
        assert signer is not None
        return VerifiedRevision(
            revision.sha, signer, len(shas), walk.ancestry if walk else None, walk.base if walk else None
        )

    def close(self) -> None:
        if self.gpg is not None:
            self.gpg.close()

    def _load_keys(self) -> None:
        keys = (self.ssh.load() if self.ssh else b"") + b"\0" + (self.gpg.load() if self.gpg else b"")
        if keys != self._keys:
            self._verified.clear()  # a key may have been removed: verify again
            self._keys = keys

    def _verify_commit(self, cache: GitCache, revision: Revision, sha: str) -> Signer:
        known = self._verified.get(sha)
        if known is not None:
            return known
        commit = cache.read_signature(revision, sha)
        signer = self._check(commit)
        if len(self._verified) >= MEMORY_LIMIT:
            self._verified.clear()
        self._verified[sha] = signer
        return signer

    def _check(self, commit: CommitSignature) -> Signer:
        short = commit.sha[:12]
        if not commit.is_signed:
            raise UnsignedCommit(f"commit {short} ({commit.summary[:60]!r}) is not signed", commit.sha)
        fmt = detect_format(commit.signature)
        self.tool_runs += 1
        if fmt is SignatureFormat.SSH:
            if self.ssh is None:
                raise UntrustedSigner(
                    f"commit {short}: signed with an SSH key; verify.keys.ssh is not set", commit.sha
                )
            return self.ssh.verify(commit)
        if fmt is SignatureFormat.OPENPGP:
            if self.gpg is None:
                raise UntrustedSigner(
                    f"commit {short}: signed with an OpenPGP key; verify.keys.gpg is not set", commit.sha
                )
            return self.gpg.verify(commit)
        what = (
            "an X.509 (gpgsm) signature" if fmt is SignatureFormat.X509 else "a signature of unknown format"
        )
        raise BadCommitSignature(f"commit {short}: {what}, which gitdock does not verify", commit.sha)
