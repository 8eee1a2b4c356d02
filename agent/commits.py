"""Signed commits, the pure part: what a signature is, what the tools said, what to check.

Everything here is a purely computational function with no side effects: no subprocess, no
git, no files. ``agent.signers`` runs ``ssh-keygen`` and ``gpg`` and feeds their output to
the parsers here; ``agent.git`` extracts the signature and the signed payload of a commit.

Errors (all about one revision; a new commit or a key change must fix them)::

    PermanentError
    ├── CommitVerificationError   a commit of the revision is refused (``sha`` names it)
    │   ├── UnsignedCommit        no signature at all
    │   ├── UntrustedSigner       signed, by a key that verify.keys does not allow
    │   ├── BadCommitSignature    the signature does not verify (tampered, expired, revoked key)
    │   └── TooManyCommits        mode ``all`` would check more than ``max_commits`` commits
    └── SigningKeysError          verify.keys cannot be read or is malformed
    TransientError
    └── SignerUnavailable         ssh-keygen or gpg is missing, crashed or timed out
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Final

from gitdock.specs.errors import PermanentError, TransientError

__all__ = [
    "AllowedSigner",
    "BadCommitSignature",
    "CommitVerificationError",
    "GpgStatus",
    "SignatureFormat",
    "Signer",
    "SignerUnavailable",
    "SigningKeysError",
    "SshSignature",
    "TooManyCommits",
    "UnsignedCommit",
    "UntrustedSigner",
    "VerifyMode",
    "detect_format",
    "judge_gpg_status",
    "parse_allowed_signers",
    "parse_gpg_status",
    "parse_ssh_signature",
    "parse_ssh_verify_output",
    "select_commits",
    "ssh_fingerprint",
    "verify_time",
]

_SSH_ARMOR: Final = "SSH SIGNATURE"
_OPTIONS: Final = frozenset({"cert-authority", "namespaces", "valid-after", "valid-before"})
_KEY_TYPE_RE = re.compile(r"(?:ssh-|ecdsa-|sk-|rsa-)[\w@.-]+$")
_TIME_RE = re.compile(r"\d{8}(?:\d{4}(?:\d{2})?)?Z?")
_GOOD_SSH_RE = re.compile(r'Good "(?P<ns>[^"]*)" signature for (?P<who>.+) with (?P<alg>\S+) key (?P<fp>\S+)')


# --- errors --------------------------------------------------------------------------------


class CommitVerificationError(PermanentError):
    """A commit of the revision to deploy is refused; ``sha`` is that commit."""

    def __init__(self, message: str, sha: str = "") -> None:
        super().__init__(message)
        self.sha = sha


class UnsignedCommit(CommitVerificationError):
    """The commit carries no signature."""


class UntrustedSigner(CommitVerificationError):
    """The commit is signed, by a key no allowed_signers line or keyring key allows."""


class BadCommitSignature(CommitVerificationError):
    """The signature does not verify: tampered payload, wrong namespace, expired or revoked key."""


class TooManyCommits(CommitVerificationError):
    """Mode ``all`` found more new commits than ``max_commits``; nothing was checked."""


class SigningKeysError(PermanentError):
    """The configured verification keys cannot be read or are malformed."""


class SignerUnavailable(TransientError):
    """ssh-keygen or gpg is missing, failed to run, or timed out."""


# --- data ----------------------------------------------------------------------------------


class VerifyMode(str, Enum):
    """Which commits of a new revision must be signed."""

    HEAD = "head"  # the commit the ref points at
    ALL = "all"  # every commit since the last deployed one (bounded by max_commits)


class SignatureFormat(str, Enum):
    """How a commit is signed (git's ``gpg.format``)."""

    SSH = "ssh"
    OPENPGP = "openpgp"
    X509 = "x509"


@dataclass(frozen=True)
class Signer:
    """Who signed a commit: the SSH principal or OpenPGP user id, and the key's fingerprint."""

    format: SignatureFormat
    principal: str
    key: str  # SHA256:... for SSH, the primary key fingerprint for OpenPGP

    def describe(self) -> str:
        kind = "SSH key" if self.format is SignatureFormat.SSH else "OpenPGP key"
        return f"{self.principal} ({kind} {self.key})"


@dataclass(frozen=True)
class SshSignature:
    """The parts of an SSHSIG blob that matter for reporting: the key and the namespace."""

    key_type: str
    public_key: bytes  # the key in SSH wire format
    namespace: str
    hash_algorithm: str

    @property
    def fingerprint(self) -> str:
        return ssh_fingerprint(self.public_key)


@dataclass(frozen=True)
class AllowedSigner:
    """One line of an allowed_signers file (ssh-keygen(1), ALLOWED SIGNERS)."""

    line: int
    principals: tuple[str, ...]
    options: tuple[tuple[str, str | None], ...]
    key_type: str
    public_key: bytes

    @property
    def fingerprint(self) -> str:
        return ssh_fingerprint(self.public_key)


@dataclass(frozen=True)
class GpgStatus:
    """What ``gpg --status-fd`` said about one verification (the keywords that decide it)."""

    good_uid: str | None = None  # GOODSIG
    valid_fingerprint: str | None = None  # VALIDSIG: the signing (sub)key
    primary_fingerprint: str | None = None  # VALIDSIG: its primary key
    bad_key: str | None = None  # BADSIG key id
    missing_key: str | None = None  # ERRSIG/NO_PUBKEY: fingerprint when given, else key id
    error_code: str | None = None  # ERRSIG rc (9: no public key, 4: unknown algorithm)
    expired_key: str | None = None  # EXPKEYSIG
    expired_signature: str | None = None  # EXPSIG
    revoked_key: str | None = None  # REVKEYSIG
    uid: str = ""  # the user id any of the above named
    signatures: int = 0  # NEWSIG count


# --- formats and SSH signatures ------------------------------------------------------------


def detect_format(signature: bytes) -> SignatureFormat | None:
    """The format of an armored commit signature, None when it is none git writes."""
    head = signature.lstrip()[:40]
    if head.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        return SignatureFormat.SSH
    if head.startswith((b"-----BEGIN PGP SIGNATURE-----", b"-----BEGIN PGP MESSAGE-----")):
        return SignatureFormat.OPENPGP
    if head.startswith(b"-----BEGIN SIGNED MESSAGE-----"):
        return SignatureFormat.X509
    return None


def ssh_fingerprint(public_key: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a wire-format public key (``SHA256:`` + unpadded base64)."""
    digest = base64.b64encode(hashlib.sha256(public_key).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _read_string(data: bytes, offset: int) -> tuple[bytes, int]:
    if offset + 4 > len(data):
        raise ValueError("truncated")
    (length,) = struct.unpack(">I", data[offset : offset + 4])
    end = offset + 4 + length
    if end > len(data):
        raise ValueError("truncated")
    return data[offset + 4 : end], end


def parse_ssh_signature(armored: bytes) -> SshSignature:
    """Parse an armored SSHSIG (PROTOCOL.sshsig). Raises ValueError when it is not one."""
    text = armored.decode("ascii", "replace").strip().splitlines()
    if (
        len(text) < 3
        or text[0] != f"-----BEGIN {_SSH_ARMOR}-----"
        or text[-1] != f"-----END {_SSH_ARMOR}-----"
    ):
        raise ValueError("not an armored SSH signature")
    try:
        blob = base64.b64decode("".join(line.strip() for line in text[1:-1]), validate=True)
    except binascii.Error:
        raise ValueError("the SSH signature is not valid base64") from None
    if blob[:6] != b"SSHSIG" or len(blob) < 10:
        raise ValueError("the SSH signature lacks the SSHSIG magic")
    public_key, offset = _read_string(blob, 10)
    namespace, offset = _read_string(blob, offset)
    _reserved, offset = _read_string(blob, offset)
    hash_algorithm, offset = _read_string(blob, offset)
    key_type, _ = _read_string(public_key, 0)
    return SshSignature(key_type.decode(), public_key, namespace.decode(), hash_algorithm.decode())


def parse_ssh_verify_output(stdout: str) -> tuple[str, str] | None:
    """(principal, fingerprint) from ``ssh-keygen -Y verify``'s success line, else None."""
    for line in stdout.splitlines():
        m = _GOOD_SSH_RE.match(line.strip())
        if m:
            return m["who"], m["fp"]
    return None


def verify_time(when: datetime) -> str:
    """``-Overify-time`` for ssh-keygen: the commit's time in UTC (what git passes too)."""
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%SZ")


# --- allowed_signers -----------------------------------------------------------------------


def _split_fields(line: str) -> list[str]:
    """Whitespace-separated fields; double quotes group (and are kept, like ssh-keygen)."""
    fields, current, quoted = [], "", False
    for ch in line:
        if ch == '"':
            quoted = not quoted
        if ch.isspace() and not quoted:
            if current:
                fields.append(current)
            current = ""
            continue
        current += ch
    if quoted:
        raise ValueError("unterminated quote")
    if current:
        fields.append(current)
    return fields


def _parse_options(text: str) -> tuple[tuple[str, str | None], ...]:
    options: list[tuple[str, str | None]] = []
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', text):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        if name not in _OPTIONS:
            raise ValueError(f"unknown option {name!r}")
        if eq and not (len(value) >= 2 and value[0] == value[-1] == '"'):
            raise ValueError(f"option {name}: the value must be in double quotes")
        unquoted = value[1:-1] if eq else None
        if name in ("valid-after", "valid-before") and not _TIME_RE.fullmatch(unquoted or ""):
            raise ValueError(f"option {name}: {unquoted!r} is not YYYYMMDD[HHMM[SS]][Z]")
        if name == "namespaces" and not unquoted:
            raise ValueError("option namespaces needs a value")
        options.append((name, unquoted))
    return tuple(options)


def _decode_key(key_type: str, blob: str) -> bytes:
    try:
        key = base64.b64decode(blob, validate=True)
        embedded, _ = _read_string(key, 0)
    except (binascii.Error, ValueError):
        raise ValueError(f"{blob[:16]}...: not a base64 SSH public key") from None
    if embedded.decode(errors="replace") != key_type:
        raise ValueError(f"the key is {embedded.decode(errors='replace')}, not {key_type}")
    return key


def _parse_signer_line(number: int, line: str) -> AllowedSigner:
    fields = _split_fields(line)
    if len(fields) < 3:
        raise ValueError("expected: principals [options] key-type base64-key")
    principals = tuple(p for p in fields[0].strip('"').split(",") if p)
    if not principals:
        raise ValueError("no principal")
    rest = fields[1:]
    options: tuple[tuple[str, str | None], ...] = ()
    if not _KEY_TYPE_RE.match(rest[0]):
        options = _parse_options(rest[0])  # ssh-keygen too: not a key, so options
        rest = rest[1:]
        if len(rest) < 2:
            raise ValueError("expected a key type and a base64 key after the options")
    return AllowedSigner(number, principals, options, rest[0], _decode_key(rest[0], rest[1]))


def parse_allowed_signers(text: str, filename: str = "allowed_signers") -> list[AllowedSigner]:
    """Parse an allowed_signers file. Raises SigningKeysError naming ``file:line: why``.

    Stricter than ssh-keygen, which skips a malformed line silently: a key that was meant to
    be allowed and is not should be an error the operator sees, not a refusal to explain.
    """
    signers: list[AllowedSigner] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(_parse_signer_line(number, line))
        except ValueError as exc:
            raise SigningKeysError(f"{filename}:{number}: {exc}") from None
    if not signers:
        raise SigningKeysError(f"{filename}: no allowed signer (the file has no key line)")
    return signers


# --- gpg --status-fd -----------------------------------------------------------------------


def _unescape(text: str) -> str:
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), text)


def parse_gpg_status(text: str) -> GpgStatus:
    """The deciding keywords of gpg's ``--status-fd`` output (DETAILS in GnuPG's doc)."""
    found: dict[str, str | int | None] = {"signatures": 0}
    for raw in text.splitlines():
        if not raw.startswith("[GNUPG:] "):
            continue
        keyword, _, args = raw[len("[GNUPG:] ") :].partition(" ")
        parts = args.split(" ")
        if keyword == "NEWSIG":
            found["signatures"] = int(found["signatures"] or 0) + 1
        elif keyword in ("GOODSIG", "BADSIG", "EXPKEYSIG", "EXPSIG", "REVKEYSIG"):
            found["uid"] = _unescape(args.partition(" ")[2])
            slot = {
                "GOODSIG": "good_uid",
                "BADSIG": "bad_key",
                "EXPKEYSIG": "expired_key",
                "EXPSIG": "expired_signature",
                "REVKEYSIG": "revoked_key",
            }[keyword]
            found[slot] = found["uid"] if keyword == "GOODSIG" else parts[0]
        elif keyword == "VALIDSIG" and len(parts) >= 10:
            found["valid_fingerprint"], found["primary_fingerprint"] = parts[0], parts[9]
        elif keyword == "VALIDSIG" and parts:
            found["valid_fingerprint"] = found["primary_fingerprint"] = parts[0]
        elif keyword == "ERRSIG" and len(parts) >= 6:
            found["error_code"] = parts[5]
            found["missing_key"] = parts[6] if len(parts) >= 7 and parts[6] != "-" else parts[0]
        elif keyword == "NO_PUBKEY" and not found.get("missing_key"):
            found["missing_key"] = parts[0]
    return GpgStatus(**found)  # type: ignore[arg-type]  # keys are GpgStatus's fields


def judge_gpg_status(status: GpgStatus, sha: str, keyring: str = "verify.keys.gpg") -> Signer:
    """The signer of a good, single OpenPGP signature; otherwise raise the matching refusal."""
    short = sha[:12]
    uid = f" ({status.uid})" if status.uid else ""
    if status.signatures > 1:
        raise BadCommitSignature(f"commit {short}: {status.signatures} OpenPGP signatures; expected one", sha)
    if status.bad_key:
        raise BadCommitSignature(
            f"commit {short}: bad OpenPGP signature by key {status.bad_key}{uid}: "
            "the commit does not match what was signed",
            sha,
        )
    if status.revoked_key:
        raise BadCommitSignature(
            f"commit {short}: signed by revoked OpenPGP key {status.revoked_key}{uid}", sha
        )
    if status.expired_key:
        raise BadCommitSignature(
            f"commit {short}: signed by expired OpenPGP key {status.expired_key}{uid}", sha
        )
    if status.expired_signature:
        raise BadCommitSignature(f"commit {short}: the OpenPGP signature{uid} has expired", sha)
    if status.missing_key:
        if status.error_code not in (None, "9"):
            raise BadCommitSignature(
                f"commit {short}: gpg cannot check the signature by key {status.missing_key} "
                f"(error {status.error_code}: unsupported algorithm?)",
                sha,
            )
        raise UntrustedSigner(
            f"commit {short}: signed by OpenPGP key {status.missing_key}, which {keyring} does not hold", sha
        )
    if status.good_uid is not None and status.primary_fingerprint:
        return Signer(SignatureFormat.OPENPGP, status.good_uid, status.primary_fingerprint)
    raise BadCommitSignature(f"commit {short}: gpg did not report a good signature", sha)


# --- which commits -------------------------------------------------------------------------


def select_commits(mode: VerifyMode, head: str, new: Sequence[str], complete: bool, limit: int) -> list[str]:
    """The commits to check, oldest first; the head is always last.

    ``new`` are the commits git found since the base, newest first, and ``complete`` says the
    walk reached the base within ``limit``. Mode ``all`` refuses (TooManyCommits) a range it
    could not see the end of: checking only part of it would let an older unsigned commit in.
    """
    if mode is VerifyMode.HEAD:
        return [head]
    if not complete:
        raise TooManyCommits(
            f"commit {head[:12]}: more than {limit} new commits to verify; raise verify.max_commits "
            "or deploy an intermediate commit first",
            head,
        )
    ordered = [sha for sha in reversed(new) if sha != head]
    return [*ordered, head]
