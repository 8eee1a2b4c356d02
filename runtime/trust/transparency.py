"""Rekor v2 entries: an inclusion proof up to a signed checkpoint, instead of a SET (pure).

A Rekor v2 (rekor-tiles) entry in a bundle v0.3 has no inclusionPromise and no integrated
time; it carries `inclusionProof {logIndex, rootHash, treeSize, hashes, checkpoint.envelope}`.
`verify_log_entry_v2` accepts one when, in this order: the checkpoint (a C2SP signed note:
`origin\\nsize\\nbase64(root)\\n[extensions]\\n\\n— name base64(keyhint || signature)\\n`) has a
signature whose 4-byte key hint is the log id's prefix (or, for an Ed25519 log key, its
C2SP key id under the signature's name) and which verifies with the trusted root's Rekor
key for that log id (valid at the proven signing time); the checkpoint's size and root are
the proof's; the RFC 6962/9162 audit path leads from the leaf hash of
canonicalizedBody to that root; and the body (hashedrekord or dsse, version 0.0.2) records
this signature, payload hash and certificate. Such an entry proves inclusion, not time: the
caller needs an RFC 3161 timestamp. Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gitdock.runtime.trust.keys import PublicKey
from gitdock.runtime.trust.signature import Check, Reason, SignatureFormatError, verify_signature
from gitdock.runtime.trust.trusted_root import TrustedRoot

__all__ = [
    "InclusionProof",
    "LogEntryV2",
    "hash_leaf",
    "parse_log_entry_v2",
    "root_from_inclusion_proof",
    "verify_log_entry_v2",
]

_EM_DASH = "\u2014 "


@dataclass(frozen=True)
class InclusionProof:
    """An audit path for one leaf, the tree it was computed for, and the log's signed checkpoint."""

    log_index: int
    tree_size: int
    root_hash: bytes
    hashes: tuple[bytes, ...]
    checkpoint: str


@dataclass(frozen=True)
class LogEntryV2:
    """A bundle tlog entry with an inclusion proof and no SET."""

    log_id: bytes
    log_index: int
    kind: str
    version: str
    body: bytes  # canonicalizedBody, decoded: the log's leaf
    proof: InclusionProof


def _b64(node: Any, what: str) -> bytes:
    if not isinstance(node, str):
        raise SignatureFormatError(f"Rekor v2 entry: {what} is missing")
    try:
        return base64.b64decode(node, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureFormatError(f"Rekor v2 entry: {what} is not base64") from exc


def _int(node: Any, what: str) -> int:
    try:
        value = int(node)
    except (TypeError, ValueError) as exc:
        raise SignatureFormatError(f"Rekor v2 entry: {what} is not an integer") from exc
    if value < 0:
        raise SignatureFormatError(f"Rekor v2 entry: {what} is negative")
    return value


def _dict(node: Any, name: str) -> dict[str, Any]:
    value = node.get(name) if isinstance(node, dict) else None
    return value if isinstance(value, dict) else {}


def parse_log_entry_v2(node: Any) -> LogEntryV2:
    """A bundle `tlogEntries[]` item without inclusionPromise; raise SignatureFormatError."""
    proof = _dict(node, "inclusionProof")
    if not proof:
        raise SignatureFormatError("Rekor entry: neither an inclusionPromise (SET) nor an inclusionProof")
    hashes = proof.get("hashes", [])
    if not isinstance(hashes, list):
        raise SignatureFormatError("Rekor v2 entry: inclusionProof.hashes is not a list")
    envelope = _dict(proof, "checkpoint").get("envelope")
    if not isinstance(envelope, str):
        raise SignatureFormatError("Rekor v2 entry: inclusionProof.checkpoint.envelope is missing")
    kind_version = _dict(node, "kindVersion")
    return LogEntryV2(
        log_id=_b64(_dict(node, "logId").get("keyId"), "logId.keyId"),
        log_index=_int(node.get("logIndex"), "logIndex"),
        kind=str(kind_version.get("kind", "")),
        version=str(kind_version.get("version", "")),
        body=_b64(node.get("canonicalizedBody"), "canonicalizedBody"),
        proof=InclusionProof(
            log_index=_int(proof.get("logIndex"), "inclusionProof.logIndex"),
            tree_size=_int(proof.get("treeSize"), "inclusionProof.treeSize"),
            root_hash=_b64(proof.get("rootHash"), "inclusionProof.rootHash"),
            hashes=tuple(_b64(h, "inclusionProof.hashes[]") for h in hashes),
            checkpoint=envelope,
        ),
    )


def hash_leaf(leaf: bytes) -> bytes:
    """RFC 6962's leaf hash: SHA-256(0x00 || leaf)."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def _hash_children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, tree_size: int, path: Sequence[bytes]
) -> bytes | None:
    """The root an audit path leads to (RFC 9162 §2.1.3.2), or None when the path's shape is wrong."""
    if index >= tree_size:
        return None
    fn, sn, r = index, tree_size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _hash_children(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _hash_children(r, p)
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def _parse_note(text: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A signed note's signed text and its (name, keyhint || signature) lines."""
    body, sep, block = text.rpartition("\n\n")
    if not sep or not block.endswith("\n"):
        raise SignatureFormatError("Rekor v2 entry: checkpoint is not a signed note")
    signatures: list[tuple[str, bytes]] = []
    for line in block[:-1].split("\n"):
        name, _, sig = line.removeprefix(_EM_DASH).partition(" ")
        if not line.startswith(_EM_DASH) or not sig:
            raise SignatureFormatError(f"Rekor v2 entry: checkpoint line {line[:40]!r} is malformed")
        raw = _b64(sig, "checkpoint signature")
        if len(raw) < 5:
            raise SignatureFormatError("Rekor v2 entry: checkpoint signature is too short")
        signatures.append((name, raw))
    return (body + "\n").encode(), signatures


def _note_key_id(name: str, key: PublicKey) -> bytes | None:
    """C2SP signed-note's key id of an Ed25519 key: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return None
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]


def _verify_checkpoint(entry: LogEntryV2, root: TrustedRoot, at: datetime) -> str:
    """Empty when the checkpoint is signed by the entry's log and commits to the proof's tree."""
    log = root.tlog(entry.log_id, at)
    if log is None:
        return f"log {entry.log_id.hex()} is not in the trusted root at the signing time"
    signed, signatures = _parse_note(entry.proof.checkpoint)
    mine = [raw[4:] for name, raw in signatures if raw[:4] in (entry.log_id[:4], _note_key_id(name, log.key))]
    if not mine:
        return "checkpoint has no signature by the log's key (no key hint matches its log id)"
    if not any(verify_signature(log.key, signed, sig) for sig in mine):
        return "checkpoint signature does not verify with the Rekor key"
    lines = signed.decode("utf-8", "replace").split("\n")
    if len(lines) < 4 or not lines[1].isdigit():
        return "checkpoint text is not origin, tree size, root hash"
    if int(lines[1]) != entry.proof.tree_size or _b64(lines[2], "checkpoint root") != entry.proof.root_hash:
        return "checkpoint is for another tree than the inclusion proof"
    return ""


def _body_fields(doc: Any) -> tuple[Any, Any, Any, Any]:
    """(hash algorithm, base64 hash, base64 signature, verifier) of a v0.0.2 entry body."""
    spec = _dict(doc, "spec")
    if "hashedRekordV002" in spec:
        entry = _dict(spec, "hashedRekordV002")
        data, sig = _dict(entry, "data"), _dict(entry, "signature")
        return data.get("algorithm"), data.get("digest"), sig.get("content"), _dict(sig, "verifier")
    entry = _dict(spec, "dsseV002")
    sigs = entry.get("signatures")
    first = sigs[0] if isinstance(sigs, list) and sigs and isinstance(sigs[0], dict) else {}
    hashed = _dict(entry, "payloadHash")
    return hashed.get("algorithm"), hashed.get("digest"), first.get("content"), _dict(first, "verifier")


def _entry_binds(entry: LogEntryV2, signed_hash: str, signature: bytes, certificate: bytes) -> str:
    """Empty when the logged body records this payload hash, signature and certificate."""
    if entry.kind not in ("hashedrekord", "dsse") or entry.version != "0.0.2":
        return f"entry kind {entry.kind} {entry.version} is not hashedrekord or dsse 0.0.2"
    try:
        doc = json.loads(entry.body)
    except ValueError as exc:
        raise SignatureFormatError("Rekor v2 entry: canonicalizedBody is not JSON") from exc
    algorithm, digest, content, verifier = _body_fields(doc)
    if algorithm != "SHA2_256" or _b64(digest, "logged digest").hex() != signed_hash:
        return "logged entry is for another payload"
    if _b64(content, "logged signature") != signature:
        return "logged entry is for another signature"
    logged = _dict(verifier, "x509Certificate").get("rawBytes")
    if _b64(logged, "logged x509Certificate") != certificate:
        return "logged entry was made with another certificate"
    return ""


def verify_log_entry_v2(
    entry: LogEntryV2,
    root: TrustedRoot,
    *,
    signed_hash: str,
    signature: bytes,
    certificate: bytes,
    at: datetime,
) -> Check:
    """The module docstring's checks; `certificate` is the signing certificate's DER.

    Raises SignatureFormatError for a malformed checkpoint or body.
    """
    why = _verify_checkpoint(entry, root, at)
    if not why and entry.proof.log_index != entry.log_index:
        why = "inclusion proof is for another log index"
    if not why:
        computed = root_from_inclusion_proof(
            hash_leaf(entry.body), entry.log_index, entry.proof.tree_size, entry.proof.hashes
        )
        if computed != entry.proof.root_hash:
            why = "inclusion proof does not lead from the entry to the checkpoint's root hash"
    why = why or _entry_binds(entry, signed_hash, signature, certificate)
    if why:
        return Check.failed(Reason.TLOG, f"Rekor v2 entry: {why}")
    return Check.passed(f"rekor v2 log index {entry.log_index}")
