"""cosign-format keys: generation, encryption, PEM loading.

Pure apart from `read_password`, which reads an environment variable or a file. Never logs or
puts a password in an error message.

The encrypted private key format is cosign's (sigstore/cosign `pkg/cosign/keys.go`): a PKCS#8
DER key sealed with NaCl secretbox under a key derived with scrypt, serialised as JSON inside a
PEM block labelled `ENCRYPTED SIGSTORE PRIVATE KEY` (older cosign: `ENCRYPTED COSIGN PRIVATE KEY`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gitdock.runtime.trust.errors import TrustError

__all__ = [
    "COSIGN_LABEL",
    "LEGACY_SCRYPT_N",
    "PASSWORD_ENV",
    "SIGSTORE_LABEL",
    "KeyFileError",
    "KeyPair",
    "PrivateKey",
    "PublicKey",
    "encrypt_private_key",
    "generate_key_pair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_password",
]

PASSWORD_ENV = "COSIGN_PASSWORD"  # noqa: S105  (the variable's name, not a password)
SIGSTORE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
_ACCEPTED_LABELS = (SIGSTORE_LABEL, COSIGN_LABEL)
# cosign's defaults for new keys.
SCRYPT_N = 65536
# The format before cosign v2 (and what podman/skopeo before 1.12 read): the older label, N=32768.
LEGACY_SCRYPT_N = 32768
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 32
# Bound the work a hostile key file can ask of us: N*r*128 bytes of memory (here <= 256 MiB).
_SCRYPT_MAX_MEMORY = 256 * 1024 * 1024
_SCRYPT_MAX_P = 16
_MIN_RSA_BITS = 2048

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


class KeyFileError(TrustError):
    """A key or password could not be loaded: wrong format, wrong password, unsupported algorithm."""


@dataclass(frozen=True)
class KeyPair:
    """PEM bytes of a freshly generated cosign key pair."""

    private_pem: bytes
    public_pem: bytes


def _pem_block(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode()


def _parse_pem_block(pem: bytes) -> tuple[str, bytes]:
    text = pem.decode("ascii", errors="replace").strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        raise KeyFileError("private key: not a PEM block")
    label = lines[0][len("-----BEGIN ") :].rstrip("-").strip()
    end_label = lines[-1][len("-----END ") :].rstrip("-").strip()
    if label != end_label:
        raise KeyFileError("private key: PEM BEGIN and END labels differ")
    try:
        return label, base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error as exc:
        raise KeyFileError("private key: PEM body is not base64") from exc


def _derive_key(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    if n < 2 or n & (n - 1) or r < 1 or not 1 <= p <= _SCRYPT_MAX_P or 128 * n * r > _SCRYPT_MAX_MEMORY:
        raise KeyFileError(f"private key: scrypt parameters N={n} r={r} p={p} are out of bounds")
    return Scrypt(salt=salt, length=nacl.secret.SecretBox.KEY_SIZE, n=n, r=r, p=p).derive(password)


def encrypt_private_key(
    key: PrivateKey, password: bytes, *, scrypt_n: int = SCRYPT_N, label: str = SIGSTORE_LABEL
) -> bytes:
    """Seal `key` as PKCS#8 in cosign's encrypted JSON, PEM label `label` (cosign v2's by default)."""
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt = secrets.token_bytes(_SALT_BYTES)
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive_key(password, salt, scrypt_n, SCRYPT_R, SCRYPT_P))
    sealed = box.encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(sealed).decode(),
    }
    return _pem_block(label, json.dumps(doc, separators=(",", ":")).encode())


def public_key_pem(key: PublicKey) -> bytes:
    """PKIX (`PUBLIC KEY`) PEM of `key`."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def generate_key_pair(password: bytes, *, scrypt_n: int = SCRYPT_N, legacy: bool = False) -> KeyPair:
    """New ECDSA P-256 key pair in cosign's format (what `cosign generate-key-pair` writes).

    `legacy` writes the pre-v2 format instead: label `ENCRYPTED COSIGN PRIVATE KEY`, scrypt
    N=32768 (unless `scrypt_n` says otherwise), which podman/skopeo before 1.12 can load.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    if legacy:
        n = LEGACY_SCRYPT_N if scrypt_n == SCRYPT_N else scrypt_n
        private = encrypt_private_key(key, password, scrypt_n=n, label=COSIGN_LABEL)
    else:
        private = encrypt_private_key(key, password, scrypt_n=scrypt_n)
    return KeyPair(private, public_key_pem(key.public_key()))


def _b64field(doc: dict[str, Any], *path: str) -> bytes:
    node: Any = doc
    for name in path:
        node = node.get(name) if isinstance(node, dict) else None
    if not isinstance(node, str):
        raise KeyFileError(f"private key: field {'.'.join(path)} is missing")
    try:
        return base64.b64decode(node, validate=True)
    except binascii.Error as exc:
        raise KeyFileError(f"private key: field {'.'.join(path)} is not base64") from exc


def _der_skip_header(der: bytes, pos: int) -> tuple[int, int]:
    """Return (start of contents, length) of the DER element at `pos`."""
    if pos + 2 > len(der):
        raise ValueError("truncated")
    first = der[pos + 1]
    if first < 0x80:
        return pos + 2, first
    count = first & 0x7F
    if count == 0 or count > 4 or pos + 2 + count > len(der):
        raise ValueError("bad length")
    return pos + 2 + count, int.from_bytes(der[pos + 2 : pos + 2 + count], "big")


def _is_pkcs8(der: bytes) -> bool:
    """PKCS#8 is SEQUENCE { INTEGER, SEQUENCE AlgorithmIdentifier, ... }; SEC1 has an OCTET STRING there."""
    try:
        if der[0] != 0x30:
            return False
        start, _ = _der_skip_header(der, 0)
        if der[start] != 0x02:
            return False
        int_start, int_len = _der_skip_header(der, start)
        return der[int_start + int_len] == 0x30
    except (ValueError, IndexError):
        return False


def load_private_key(pem: bytes, password: bytes) -> PrivateKey:
    """Decrypt a cosign encrypted private key; the plaintext must be PKCS#8, as cosign requires."""
    label, body = _parse_pem_block(pem)
    if label not in _ACCEPTED_LABELS:
        raise KeyFileError(f"private key: PEM label {label!r} is not an encrypted cosign/sigstore key")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError("private key: body is not cosign's encrypted JSON") from exc
    if not isinstance(doc, dict):
        raise KeyFileError("private key: body is not cosign's encrypted JSON")
    kdf, cipher = doc.get("kdf"), doc.get("cipher")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise KeyFileError("private key: only the scrypt KDF is supported")
    if not isinstance(cipher, dict) or cipher.get("name") != "nacl/secretbox":
        raise KeyFileError("private key: only the nacl/secretbox cipher is supported")
    params = kdf.get("params")
    if not isinstance(params, dict) or not all(isinstance(params.get(k), int) for k in ("N", "r", "p")):
        raise KeyFileError("private key: scrypt parameters N, r, p are missing")
    salt = _b64field(doc, "kdf", "salt")
    nonce = _b64field(doc, "cipher", "nonce")
    sealed = _b64field(doc, "ciphertext")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise KeyFileError("private key: secretbox nonce must be 24 bytes")
    box = nacl.secret.SecretBox(_derive_key(password, salt, params["N"], params["r"], params["p"]))
    try:
        der = box.decrypt(sealed, nonce)
    except nacl.exceptions.CryptoError as exc:
        raise KeyFileError("private key: decryption failed (wrong password or corrupted key)") from exc
    if not _is_pkcs8(der):
        raise KeyFileError("private key: decrypted key is not PKCS#8 (cosign requires PKCS#8)")
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError("private key: decrypted key is not PKCS#8 (cosign requires PKCS#8)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"private key: {type(key).__name__} is not supported")
    _check_public(key.public_key())
    return key


def _check_public(key: object) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise KeyFileError(f"public key: curve {key.curve.name} is not supported (P-256/384/521)")
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise KeyFileError(f"public key: RSA key of {key.key_size} bits is too small")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise KeyFileError(f"public key: {type(key).__name__} is not supported")


def load_public_key(pem: bytes) -> PublicKey:
    """Load a PKIX `PUBLIC KEY` PEM: ECDSA P-256/384/521, RSA >= 2048 bits or Ed25519."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError("public key: not a PKIX PEM public key") from exc
    return _check_public(key)


def key_id(key: PublicKey) -> str:
    """Stable short name for a public key: `sha256:` + hex digest of its PKIX DER."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def read_password(*, env: str = PASSWORD_ENV, file: Path | None = None) -> bytes:
    """Password from `file` (trailing newline dropped) or else the environment variable `env`."""
    if file is not None:
        try:
            return file.read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise KeyFileError(f"password file {file}: cannot be read ({exc.strerror})") from exc
    value = os.environ.get(env)
    if value is None:
        raise KeyFileError(f"password: set {env} or give a password file")
    return value.encode()
