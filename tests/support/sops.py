"""Write files in the SOPS format without sops: the tests' age vectors.

``encrypt_document`` does what ``sops -e`` does: a random 32-byte data key; every value
AES-256-GCM with a 32-byte IV and its path (``a:b:``) as additional data; the MAC (upper-case
hex SHA-512 over the plaintext values in order) encrypted with ``lastmodified`` as additional
data; the data key wrapped to an age recipient by Debian's ``age`` binary. test_sops.py checks
``encrypt_value`` against the tokens the real sops wrote, so both directions agree.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from typing import Any

import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gitdock.specs.sops import flatten_metadata, to_bytes

__all__ = ["age_keygen", "encrypt_document", "encrypt_value", "wrap_to_age"]

LASTMODIFIED = "2026-12-01T10:00:00Z"
_TYPES = {bool: "bool", int: "int", float: "float", str: "str", bytes: "bytes"}


def age_keygen() -> tuple[str, str]:
    """A fresh age identity (the key file's text) and its recipient, from ``age-keygen``."""
    identity = subprocess.run(["age-keygen"], capture_output=True, check=True, text=True).stdout
    recipient = subprocess.run(
        ["age-keygen", "-y"], input=identity, capture_output=True, check=True, text=True
    ).stdout.strip()
    return identity, recipient


def wrap_to_age(data_key: bytes, recipient: str) -> str:
    """The data key encrypted to ``recipient``, armored, as sops stores it."""
    done = subprocess.run(
        ["age", "--encrypt", "--armor", "--recipient", recipient],
        input=data_key,
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


def encrypt_value(value: Any, key: bytes, additional_data: str, iv: bytes | None = None) -> str:
    """One value as sops writes it: ``ENC[AES256_GCM,data:,iv:,tag:,type:]`` ("" stays "")."""
    if value == "":
        return ""
    iv = iv if iv is not None else os.urandom(32)
    sealed = AESGCM(key).encrypt(iv, to_bytes(value), additional_data.encode())
    data, tag = (base64.b64encode(part).decode() for part in (sealed[:-16], sealed[-16:]))
    return (
        f"ENC[AES256_GCM,data:{data},iv:{base64.b64encode(iv).decode()},tag:{tag},type:{_TYPES[type(value)]}]"
    )


def encrypt_document(
    doc: dict[str, Any],
    fmt: str,
    recipient: str,
    *,
    data_key: bytes | None = None,
    with_mac: bool = True,
    unencrypted_suffix: str = "_unencrypted",
) -> bytes:
    """``doc`` encrypted to the age ``recipient`` in ``fmt`` (yaml, json, dotenv, ini, binary).

    For ``binary``, ``doc`` is ``{"data": text}``. Keys ending in ``unencrypted_suffix`` stay
    in the clear but are still covered by the MAC.
    """
    key = data_key or os.urandom(32)
    mac = hashlib.sha512()

    def walk(value: Any, path: list[str]) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, [*path, k]) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, path) for v in value]
        mac.update(to_bytes(value))
        if any(p.endswith(unencrypted_suffix) for p in path):
            return value
        return encrypt_value(value, key, ":".join(path) + ":")

    encrypted = walk(doc, [])
    metadata: dict[str, Any] = {"age": [{"recipient": recipient, "enc": wrap_to_age(key, recipient)}]}
    metadata["lastmodified"] = LASTMODIFIED
    if with_mac:
        metadata["mac"] = encrypt_value(mac.hexdigest().upper(), key, LASTMODIFIED)
    metadata |= {"unencrypted_suffix": unencrypted_suffix, "version": "3.9.4"}
    return _emit(encrypted, metadata, fmt)


def _emit(encrypted: dict[str, Any], metadata: dict[str, Any], fmt: str) -> bytes:
    if fmt == "yaml":
        return yaml.safe_dump({**encrypted, "sops": metadata}, sort_keys=False).encode()
    if fmt in ("json", "binary"):
        return (json.dumps({**encrypted, "sops": metadata}, indent="\t") + "\n").encode()
    flat = flatten_metadata(metadata)
    if fmt == "dotenv":
        lines = [f"{k}={v}" for k, v in encrypted.items()] + [f"sops_{k}={v}" for k, v in flat.items()]
        return ("\n".join(lines) + "\n").encode()
    assert fmt == "ini", fmt
    out: list[str] = []
    for section, items in encrypted.items():
        out += [f"[{section}]", *(f"{k} = {v}" for k, v in items.items()), ""]
    out += ["[sops]", *(f"{k} = {v}" for k, v in flat.items())]
    return ("\n".join(out) + "\n").encode()
