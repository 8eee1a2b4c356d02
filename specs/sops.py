"""SOPS-encrypted files: recognise them, decrypt them in memory, check their MAC.

A file is SOPS-encrypted when it parses with SOPS metadata: a top-level ``sops`` mapping
(YAML, JSON), a ``[sops]`` section (INI), ``sops_`` keys (dotenv), or the JSON ``{"data",
"sops"}`` of a binary file. ``decrypt_file`` returns the plaintext as ``sops -d`` would print
it, so the caller parses it as if the file had never been encrypted.

The format, as sops writes it: a random 32-byte data key, wrapped to each recipient (age,
PGP, ...) in the metadata; every value ``ENC[AES256_GCM,data:,iv:,tag:,type:]`` with its
path (``a:b:``) as additional data; and ``mac``, the upper-case hex SHA-512 over the
plaintext values in order, itself encrypted with the data key and ``lastmodified`` as
additional data. A file without a MAC, or whose MAC does not match, is refused: without it
anyone who can edit the file could drop or reorder values unseen.

This is a purely computational module: the only outside step, opening the data key, is the
``unwrap`` callable it is given (``keyring.Keyring.unwrap`` runs ``age``/``gpg``). Errors
never contain a decrypted value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

import yaml

from gitdock.specs.errors import PermanentError

__all__ = [
    "KeyStanza",
    "SopsError",
    "SopsFormat",
    "decrypt_file",
    "decrypt_value",
    "detect_format",
    "flatten_metadata",
    "to_bytes",
    "unflatten_metadata",
]

# sha256(b"sops"): the MAC of a file with mac_only_encrypted starts from these bytes.
MAC_ONLY_ENCRYPTED_INIT = hashlib.sha256(b"sops").digest()
_ENC = re.compile(r"ENC\[AES256_GCM,data:([^,]*),iv:([^,]+),tag:([^,]+),type:([^\]]+)\]\Z")
_TRIPLE = '"' * 3
_UNSUPPORTED_RULES = ("unencrypted_comment_regex", "encrypted_comment_regex")


class SopsError(PermanentError):
    """A SOPS file cannot be decrypted: no usable key, a bad MAC, a malformed value."""


class SopsFormat(str, Enum):
    YAML = "yaml"
    JSON = "json"
    INI = "ini"
    DOTENV = "dotenv"
    BINARY = "binary"


@dataclass(frozen=True)
class KeyStanza:
    """One wrapped copy of the data key: ``kind`` is "age" or "pgp"; ``recipient`` is the
    age public key or the PGP fingerprint; ``enc`` the armored ciphertext."""

    kind: str
    recipient: str
    enc: str


Unwrap = Callable[[Sequence[KeyStanza]], bytes]


# --- recognising -------------------------------------------------------------------------


def detect_format(name: str, data: bytes) -> SopsFormat | None:
    """The SOPS format of ``data``, or None when it is not SOPS-encrypted. Pure.

    Recognised by content (sops itself goes by extension, which env files often lack);
    ``name`` only tells a JSON document (``*.json``) from a binary file's ``{data, sops}``.
    """
    if b"sops" not in data:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.lstrip().startswith("{"):
        return _detect_json(name, text)
    if re.search(r"^sops_(version|lastmodified|mac)=", text, re.M):
        return SopsFormat.DOTENV
    if re.search(r"^\[sops\][ \t]*$", text, re.M):
        return SopsFormat.INI
    if re.search(r"^sops:[ \t]*$", text, re.M):
        try:
            doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        except yaml.YAMLError:
            return None
        if isinstance(doc, dict) and _is_metadata(doc.get("sops")):
            return SopsFormat.YAML
    return None


def _detect_json(name: str, text: str) -> SopsFormat | None:
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not _is_metadata(doc.get("sops")):
        return None
    if set(doc) == {"data", "sops"} and not name.endswith(".json"):
        return SopsFormat.BINARY
    return SopsFormat.JSON


def _is_metadata(value: Any) -> bool:
    return isinstance(value, dict) and ("version" in value or "lastmodified" in value)


# --- decrypting ----------------------------------------------------------------------------


def decrypt_file(name: str, data: bytes, unwrap: Unwrap) -> bytes:
    """The plaintext of SOPS file ``data``, serialised in its own format. Pure but for ``unwrap``.

    Raises SopsError when the file is not SOPS-encrypted, has no MAC, no key opens it, a
    value does not decrypt or the MAC does not match.
    """
    fmt = detect_format(name, data)
    if fmt is None:
        raise SopsError("not a SOPS-encrypted file")
    tree, metadata = _parse(fmt, data.decode("utf-8"))
    rules = _Rules.from_metadata(metadata)
    token = metadata.get("mac")
    if not isinstance(token, str) or not token:
        raise SopsError("the file has no MAC (sops metadata `mac`), so its integrity cannot be checked")
    key = unwrap(_stanzas(metadata))
    if len(key) != 32:
        raise SopsError(f"the data key is {len(key)} bytes, not 32")
    plain, mac = decrypt_tree(tree, key, rules)
    stored = decrypt_value(token, key, _lastmodified(metadata))
    if not isinstance(stored, str) or not hmac.compare_digest(stored.encode(), mac.encode()):
        raise SopsError("MAC mismatch: the file was changed without its data key")
    return _emit(fmt, plain)


def decrypt_value(token: Any, key: bytes, additional_data: str) -> Any:
    """One ``ENC[AES256_GCM,...]`` value, typed as sops types it ("" stays ""). Pure."""
    if token == "":
        return ""
    match = _ENC.match(token) if isinstance(token, str) else None
    if match is None:
        raise SopsError("a value that should be encrypted is not in sops' ENC[AES256_GCM,...] form")
    # Imported here: every load reads this module, few decrypt (cryptography costs ~8 ms).
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        data, iv, tag = (base64.b64decode(part, validate=True) for part in match.group(1, 2, 3))
        raw = AESGCM(key).decrypt(iv, data + tag, additional_data.encode())
    except (binascii.Error, ValueError, InvalidTag):
        raise SopsError("a value does not decrypt with the data key (tampered, or moved)") from None
    return _typed(raw, match.group(4))


def _typed(raw: bytes, kind: str) -> Any:
    text = raw.decode("utf-8", errors="strict") if kind != "bytes" else ""
    try:
        if kind in ("str", "comment"):
            return text
        if kind in ("int", "int64"):
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            return {"true": True, "1": True, "t": True, "false": False, "0": False, "f": False}[text.lower()]
        if kind == "bytes":
            return raw
    except (ValueError, KeyError):
        raise SopsError(f"a value of type {kind} does not parse as one") from None
    raise SopsError(f"unknown value type {kind!r}")


def to_bytes(value: Any) -> bytes:
    """A value as sops feeds it to the MAC (Go's ToBytes: ``True``, shortest floats). Pure."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        # strconv.FormatFloat(f, 'f', -1, 64): shortest round-trip digits, never an exponent.
        return format(Decimal(repr(value)).normalize(), "f").encode()
    if isinstance(value, str):
        return value.encode()
    raise SopsError(f"a value of type {type(value).__name__} cannot be authenticated")


def decrypt_tree(tree: dict[str, Any], key: bytes, rules: _Rules) -> tuple[dict[str, Any], str]:
    """The tree with its values decrypted, and the MAC sops computes over it. Pure."""
    mac = hashlib.sha512()
    if rules.mac_only_encrypted:
        mac.update(MAC_ONLY_ENCRYPTED_INIT)

    def leaf(value: Any, path: list[str]) -> Any:
        encrypted = rules.is_encrypted(path)
        if encrypted:
            value = decrypt_value(value, key, ":".join(path) + ":")
        if not rules.mac_only_encrypted or encrypted:
            mac.update(to_bytes(value))
        return value

    plain = _walk(tree, [], leaf)
    return plain, mac.hexdigest().upper()


def _walk(value: Any, path: list[str], leaf: Callable[[Any, list[str]], Any]) -> Any:
    """sops' walk: maps extend the path by their key, list items share their parent's path,
    None is skipped (neither decrypted nor authenticated)."""
    if isinstance(value, dict):
        return {k: _walk(v, [*path, str(k)], leaf) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, path, leaf) for v in value]
    if value is None:
        return None
    return leaf(value, path)


@dataclass(frozen=True)
class _Rules:
    """Which values sops encrypted: suffix and regex rules from the metadata."""

    unencrypted_suffix: str = ""
    encrypted_suffix: str = ""
    unencrypted_regex: str = ""
    encrypted_regex: str = ""
    mac_only_encrypted: bool = False

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> _Rules:
        for rule in _UNSUPPORTED_RULES:
            if metadata.get(rule):
                raise SopsError(f"sops metadata `{rule}` is not supported")
        names = ("encrypted_suffix", "unencrypted_regex", "encrypted_regex")
        rules = {name: str(metadata.get(name) or "") for name in names}
        for pattern in (rules["unencrypted_regex"], rules["encrypted_regex"]):
            try:
                re.compile(pattern)
            except re.error:
                raise SopsError(f"sops metadata: {pattern!r} is not a regular expression") from None
        return cls(
            unencrypted_suffix=str(metadata.get("unencrypted_suffix") or ""),
            mac_only_encrypted=str(metadata.get("mac_only_encrypted", "")).lower() == "true",
            **rules,
        )

    def is_encrypted(self, path: list[str]) -> bool:
        """sops' shouldBeEncrypted, without the comment rules (refused above)."""
        encrypted = True
        if self.unencrypted_suffix and any(p.endswith(self.unencrypted_suffix) for p in path):
            encrypted = False
        if self.encrypted_suffix:
            encrypted = any(p.endswith(self.encrypted_suffix) for p in path)
        if self.unencrypted_regex and any(re.search(self.unencrypted_regex, p) for p in path):
            encrypted = False
        if self.encrypted_regex:
            encrypted = any(re.search(self.encrypted_regex, p) for p in path)
        return encrypted


def _lastmodified(metadata: dict[str, Any]) -> str:
    """``lastmodified`` as Go's RFC 3339 formatting prints it: the MAC's additional data."""
    value = metadata.get("lastmodified")
    if not isinstance(value, str) or not value:
        raise SopsError("sops metadata has no `lastmodified`")
    return re.sub(r"(T\d\d:\d\d:\d\d)\.\d+", r"\1", value)


def _stanzas(metadata: dict[str, Any]) -> list[KeyStanza]:
    groups = metadata.get("key_groups")
    if groups:
        if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], dict):
            raise SopsError("sops key groups (Shamir's secret sharing) are not supported")
        metadata = groups[0]
    stanzas = []
    for kind, field in (("age", "recipient"), ("pgp", "fp")):
        for entry in metadata.get(kind) or ():
            if isinstance(entry, dict) and isinstance(entry.get("enc"), str):
                stanzas.append(KeyStanza(kind, str(entry.get(field) or ""), entry["enc"]))
    if not stanzas:
        others = sorted(k for k in ("kms", "gcp_kms", "azure_kv", "hc_vault") if metadata.get(k))
        also = f" (only {', '.join(others)}, which gitdock cannot use)" if others else ""
        raise SopsError(f"the file has no age or PGP recipient{also}")
    return stanzas


# --- formats -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML as sops' Go parser reads it: only true/false are booleans, timestamps stay text."""


_YAML_11_ONLY = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:timestamp")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _YAML_11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _parse(fmt: SopsFormat, text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The document without its metadata, and the metadata (both plain Python data)."""
    if fmt in (SopsFormat.JSON, SopsFormat.BINARY):
        doc = json.loads(text)
    elif fmt is SopsFormat.YAML:
        docs = list(yaml.load_all(text, Loader=_Loader))
        if len(docs) != 1:
            raise SopsError("a SOPS YAML file with several documents is not supported")
        doc = docs[0]
    elif fmt is SopsFormat.INI:
        doc = _parse_ini(text)
        doc["sops"] = unflatten_metadata(doc.pop("sops", {}))
    else:
        doc = _parse_dotenv(text)
        meta = {k[len("sops_") :]: doc.pop(k) for k in list(doc) if k.startswith("sops_")}
        doc["sops"] = unflatten_metadata(meta)
    metadata = doc.pop("sops")
    if not isinstance(metadata, dict):
        raise SopsError("sops metadata is not a mapping")
    return doc, metadata


def _parse_ini(text: str) -> dict[str, Any]:
    """INI as go-ini reads sops' files: ``[section]``, ``key = value``, ``;``/``#`` comments,
    and triple-double-quoted values that span lines (how sops writes a PGP message)."""
    doc: dict[str, Any] = {}
    section: dict[str, Any] | None = None
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        line = lines[number].strip()
        number += 1
        if not line or line[0] in ";#":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = doc.setdefault(line[1:-1].strip(), {})
            continue
        key, sep, value = line.partition("=")
        if not sep or section is None:
            raise SopsError(f"not valid INI: line {number} is neither [section] nor key = value")
        value = value.strip()
        if value.startswith(_TRIPLE):
            value, number = _ini_multiline(value[3:], lines, number)
        elif len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        section[key.strip()] = value
    return doc


def _ini_multiline(first: str, lines: list[str], number: int) -> tuple[str, int]:
    parts = [first]
    while not parts[-1].endswith(_TRIPLE):
        if number >= len(lines):
            raise SopsError("not valid INI: a triple-quoted value is not closed")
        parts.append(lines[number])
        number += 1
    return "\n".join(parts)[:-3], number


def _parse_dotenv(text: str) -> dict[str, Any]:
    """sops' dotenv store: ``KEY=VALUE`` lines split at the first ``=``, ``#`` comments."""
    values: dict[str, Any] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise SopsError(f"line {number} is not KEY=VALUE")
        values[key] = value.replace("\\n", "\n")
    return values


def unflatten_metadata(flat: dict[str, Any]) -> dict[str, Any]:
    """INI and dotenv metadata (``pgp__list_0__map_fp``) as the nested mapping. Pure."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = re.split(r"__(map|list)_", key)
        node: Any = out
        steps: list[str | int] = [parts[0]]
        pairs = zip(parts[1::2], parts[2::2], strict=True)
        steps += [int(token) if kind == "list" else token for kind, token in pairs]
        for step, following in itertools.pairwise(steps):
            node = _child(node, step, [] if isinstance(following, int) else {})
        last = steps[-1]
        text = value.replace("\\n", "\n") if isinstance(value, str) else value
        if isinstance(node, list):
            assert isinstance(last, int)
            node.extend([None] * (last + 1 - len(node)))
            node[last] = text
        else:
            node[last] = text
    return out


def _child(node: Any, step: str | int, empty: Any) -> Any:
    if isinstance(node, list) and isinstance(step, int):
        node.extend([None] * (step + 1 - len(node)))
        if node[step] is None:
            node[step] = empty
        return node[step]
    if isinstance(node, dict) and isinstance(step, str):
        return node.setdefault(step, empty)
    raise SopsError("sops metadata: inconsistent flattened keys")


def flatten_metadata(metadata: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of ``unflatten_metadata`` (newlines escaped as ``\\n``). Pure."""
    flat: dict[str, Any] = {}
    for key, value in metadata.items():
        _flatten_into(flat, f"{prefix}{key}", value)
    return flat


def _flatten_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten_into(flat, f"{key}__map_{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _flatten_into(flat, f"{key}__list_{i}", v)
    else:
        flat[key] = value.replace("\n", "\\n") if isinstance(value, str) else value


def _emit(fmt: SopsFormat, plain: dict[str, Any]) -> bytes:
    """The decrypted document in its own format, as ``sops -d`` prints it."""
    if fmt is SopsFormat.BINARY:
        data = plain.get("data", "")
        return data if isinstance(data, bytes) else str(data).encode()
    if fmt is SopsFormat.JSON:
        return (json.dumps(plain, indent=4, ensure_ascii=False) + "\n").encode()
    if fmt is SopsFormat.YAML:
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True).encode()
    if fmt is SopsFormat.INI:
        lines = []
        for section, items in plain.items():
            lines += [f"[{section}]", *(f"{k} = {_ini_text(v)}" for k, v in items.items()), ""]
        return "\n".join(lines).encode()
    lines = [f"{k}={_ini_text(v)}" for k, v in plain.items()]
    return "".join(f"{line}\n" for line in lines).encode()


def _ini_text(value: Any) -> str:
    text = value.decode() if isinstance(value, bytes) else to_bytes(value).decode()
    return text.replace("\n", "\\n")
