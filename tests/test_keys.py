"""cosign-format keys: generation, encryption round trip, cosign's own encrypted vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gitdock.runtime.trust.keys import (
    KeyFileError,
    encrypt_private_key,
    generate_key_pair,
    key_id,
    load_private_key,
    load_public_key,
    public_key_pem,
    read_password,
)

VECTORS = Path(__file__).parents[1].parent / "shared" / "vectors"
COSIGN_KEYS = VECTORS / "cosign-encrypted-keys"
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"{VECTORS} is absent")


def _pem_json(pem: bytes) -> Any:
    body = b"".join(pem.strip().splitlines()[1:-1])
    doc = json.loads(base64.b64decode(body))
    assert isinstance(doc, dict)
    return doc


def test_generate_key_pair_writes_cosign_format_and_round_trips() -> None:
    pair = generate_key_pair(b"s3cret")
    assert pair.private_pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert pair.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    doc = _pem_json(pair.private_pem)
    assert doc["kdf"] == {
        "name": "scrypt",
        "params": {"N": 65536, "r": 8, "p": 1},
        "salt": doc["kdf"]["salt"],
    }
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert doc["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    key = load_private_key(pair.private_pem, b"s3cret")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert key_id(key.public_key()) == key_id(load_public_key(pair.public_pem))


def test_wrong_password_is_refused_without_echoing_it() -> None:
    pair = generate_key_pair(b"right-password", scrypt_n=1024)
    with pytest.raises(KeyFileError, match="wrong password") as info:
        load_private_key(pair.private_pem, b"wrong-password")
    assert "wrong-password" not in str(info.value)
    assert "right-password" not in str(info.value)


def test_tampered_ciphertext_is_refused() -> None:
    pair = generate_key_pair(b"pw", scrypt_n=1024)
    doc = _pem_json(pair.private_pem)
    sealed = bytearray(base64.b64decode(str(doc["ciphertext"])))
    sealed[-1] ^= 0x01
    doc["ciphertext"] = base64.b64encode(bytes(sealed)).decode()
    body = base64.b64encode(json.dumps(doc).encode()).decode()
    label = "ENCRYPTED SIGSTORE PRIVATE KEY"
    tampered = f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"
    assert tampered.encode() != pair.private_pem
    with pytest.raises(KeyFileError, match="decryption failed"):
        load_private_key(tampered.encode(), b"pw")


def test_plain_pkcs8_pem_is_not_accepted_as_a_cosign_key() -> None:
    from cryptography.hazmat.primitives import serialization

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="not an encrypted cosign/sigstore key"):
        load_private_key(pem, b"")


def test_hostile_scrypt_parameters_are_bounded() -> None:
    pair = generate_key_pair(b"pw", scrypt_n=1024)
    doc = _pem_json(pair.private_pem)
    doc["kdf"]["params"]["N"] = 2**30
    body = base64.b64encode(json.dumps(doc).encode()).decode()
    pem = (
        f"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n{body}\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n"
    )
    with pytest.raises(KeyFileError, match="out of bounds"):
        load_private_key(pem.encode(), b"pw")


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP384R1()),
        rsa.generate_private_key(65537, 2048),
        ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["p384", "rsa2048", "ed25519"],
)
def test_other_key_types_round_trip(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
) -> None:
    pem = encrypt_private_key(key, b"pw", scrypt_n=1024)
    loaded = load_private_key(pem, b"pw")
    assert key_id(loaded.public_key()) == key_id(key.public_key())
    assert key_id(load_public_key(public_key_pem(key.public_key()))) == key_id(key.public_key())


def test_small_rsa_and_non_key_pem_are_rejected() -> None:
    small = rsa.generate_private_key(65537, 1024).public_key()  # noqa: S505  (the point of the test)
    with pytest.raises(KeyFileError, match="too small"):
        load_public_key(public_key_pem(small))
    with pytest.raises(KeyFileError, match="not a PKIX PEM"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


@needs_vectors
@pytest.mark.parametrize("name", ["pemcosignkey.key", "pemsigstorekey.key"])
def test_cosign_encrypted_vectors_load_with_password_hello(name: str) -> None:
    key = load_private_key((COSIGN_KEYS / name).read_bytes(), b"hello")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)


@needs_vectors
def test_cosign_vector_with_sec1_plaintext_is_rejected() -> None:
    with pytest.raises(KeyFileError, match="not PKCS#8"):
        load_private_key((COSIGN_KEYS / "pemcosigneckey.key").read_bytes(), b"hello")


@needs_vectors
def test_cosign_vector_with_wrong_password_is_rejected() -> None:
    with pytest.raises(KeyFileError, match="wrong password"):
        load_private_key((COSIGN_KEYS / "pemcosignkey.key").read_bytes(), b"hellO")


def test_read_password_prefers_file_then_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "from-env")
    assert read_password() == b"from-env"
    secret = tmp_path / "pw"
    secret.write_bytes(b"from-file\n")
    assert read_password(file=secret) == b"from-file"
    monkeypatch.delenv("COSIGN_PASSWORD")
    with pytest.raises(KeyFileError, match="set COSIGN_PASSWORD"):
        read_password()


def test_legacy_key_pair_uses_the_cosign_label_and_scrypt_n_32768() -> None:
    pair = generate_key_pair(b"s3cret", legacy=True)
    assert pair.private_pem.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n")
    assert pair.private_pem.rstrip().endswith(b"-----END ENCRYPTED COSIGN PRIVATE KEY-----")
    assert _pem_json(pair.private_pem)["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    key = load_private_key(pair.private_pem, b"s3cret")
    assert key_id(key.public_key()) == key_id(load_public_key(pair.public_pem))


@needs_vectors
def test_legacy_key_pair_has_the_shape_of_cosigns_own_legacy_vector() -> None:
    vector = (COSIGN_KEYS / "pemcosignkey.key").read_bytes()
    ours = generate_key_pair(b"hello", legacy=True).private_pem
    assert ours.splitlines()[0] == vector.splitlines()[0]
    theirs, mine = _pem_json(vector), _pem_json(ours)
    assert mine["kdf"]["params"] == theirs["kdf"]["params"]
    assert (mine["kdf"]["name"], mine["cipher"]["name"]) == (theirs["kdf"]["name"], theirs["cipher"]["name"])
    assert sorted(mine) == sorted(theirs)


def test_cli_keygen_format_legacy_writes_the_older_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import argparse

    from gitdock.agent.cli.trust import add_trust_commands

    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    parser = argparse.ArgumentParser()
    add_trust_commands(parser.add_subparsers(dest="command", required=True))
    prefix = str(tmp_path / "old")
    args = parser.parse_args(["keygen", "--format", "legacy", "--output-key-prefix", prefix])
    assert args.func(args) == 0
    pem = (tmp_path / "old.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----")
    assert _pem_json(pem)["kdf"]["params"]["N"] == 32768
    load_private_key(pem, b"pw")
    args = parser.parse_args(["keygen", "--output-key-prefix", str(tmp_path / "new")])
    assert args.func(args) == 0
    assert (tmp_path / "new.key").read_bytes().startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
