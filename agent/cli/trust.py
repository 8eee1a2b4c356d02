"""`gitdock keygen`, `gitdock sign`, `gitdock verify`: cosign-compatible signing from the CLI.

Exit codes follow `gitdock.agent.cli.common`: 0 success (verified); 1 refused by policy, a trust problem
(bad key, wrong password) or any other error; JSON output (`--output json`) tells them apart.
Passwords come from COSIGN_PASSWORD or `--password-file`, never from argv, and are never printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path

from gitdock.runtime.trust.errors import TrustError
from gitdock.runtime.trust.keys import (
    PASSWORD_ENV,
    KeyFileError,
    generate_key_pair,
    load_private_key,
    read_password,
)
from gitdock.runtime.trust.policy import TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import RegistryClient
from gitdock.runtime.trust.sign import sign_image, sign_image_recursive
from gitdock.runtime.trust.signature import IdentityMode, RekorMode
from gitdock.runtime.trust.verify import ImageRefused, verify_image
from gitdock.specs.errors import GitdockError
from gitdock.specs.reference import parse_reference

__all__ = ["add_trust_commands"]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_ERROR = 1  # same as gitdock.agent.cli.common: any error is 1


def _password(args: argparse.Namespace, *, confirm: bool = False) -> bytes:
    if args.password_file is not None or PASSWORD_ENV in os.environ or not sys.stdin.isatty():
        return read_password(file=args.password_file)
    first = getpass.getpass("Enter password for private key: ").encode()
    if confirm and getpass.getpass("Enter password for private key again: ").encode() != first:
        raise KeyFileError("password: the two entries differ")
    return first


def _client(args: argparse.Namespace) -> RegistryClient:
    return RegistryClient(
        insecure=args.insecure_registry, auth_file=args.registry_auth_file, timeout=args.timeout
    )


def _fail(message: str, code: int) -> int:
    print(f"gitdock: {message}", file=sys.stderr)
    return code


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write `<prefix>.key` (encrypted) and `<prefix>.pub`."""
    key_path = Path(f"{args.output_key_prefix}.key")
    pub_path = Path(f"{args.output_key_prefix}.pub")
    existing = [str(p) for p in (key_path, pub_path) if p.exists()]
    if existing and not args.force:
        return _fail(f"keygen: {', '.join(existing)} already exist (use --force to overwrite)", EXIT_ERROR)
    try:
        pair = generate_key_pair(_password(args, confirm=True), legacy=args.format == "legacy")
    except TrustError as exc:
        return _fail(f"keygen: {exc}", EXIT_REFUSED)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pair.private_pem)
    pub_path.write_bytes(pair.public_pem)
    print(f"Private key written to {key_path}")
    print(f"Public key written to {pub_path}")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    """Push a cosign legacy signature for IMAGE (and, with --recursive, each platform's manifest)."""
    try:
        ref = parse_reference(args.image)
        key = load_private_key(Path(args.key).read_bytes(), _password(args))
        with _client(args) as client:
            digests = (
                sign_image_recursive(ref, key, client) if args.recursive else [sign_image(ref, key, client)]
            )
    except ValueError as exc:
        return _fail(f"sign: {exc}", EXIT_ERROR)
    except OSError as exc:
        return _fail(f"sign: {args.key}: cannot be read ({exc.strerror})", EXIT_ERROR)
    except TrustError as exc:
        return _fail(f"sign: {exc}", EXIT_REFUSED)
    except GitdockError as exc:
        return _fail(f"sign: {exc}", EXIT_ERROR)
    for digest in digests:
        print(f"Signed {ref.familiar}@{digest}")
    return EXIT_OK


def _policy(args: argparse.Namespace) -> TrustPolicy:
    rekor = RekorMode(args.rekor)
    keys: dict[str, TrustKey] = {}
    for i, path in enumerate(args.key):
        try:
            pem = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyFileError(f"public key {path}: cannot be read") from exc
        keys[f"key{i + 1}" if len(args.key) > 1 else Path(path).name] = TrustKey(public_key=pem, rekor=rekor)
    rekor_pem = Path(args.rekor_key).read_text() if args.rekor_key else None
    identity = IdentityMode.IGNORE if args.ignore_identity else IdentityMode.EXACT_REPOSITORY
    rule = TrustRule(pattern="*", keys=tuple(keys), identity=identity)
    return TrustPolicy(keys=keys, rules=(rule,), rekor_public_key=rekor_pem)


def cmd_verify(args: argparse.Namespace) -> int:
    """Verify IMAGE against the given public key(s); exit 0 verified, 1 refused."""
    as_json = args.output == "json"
    try:
        ref = parse_reference(args.image)
        policy = _policy(args)
        with _client(args) as client:
            result = verify_image(ref, policy, client)
    except ImageRefused as exc:
        if as_json:
            print(json.dumps(exc.to_json(), indent=2))
            return EXIT_REFUSED
        return _fail(str(exc), EXIT_REFUSED)
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError
        return _fail(f"verify: {exc}", EXIT_ERROR)
    except TrustError as exc:
        return _fail(f"verify: {exc}", EXIT_REFUSED)
    except GitdockError as exc:
        return _fail(f"verify: {exc}", EXIT_ERROR)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(f"Verified {result.reference.familiar} ({result.digest}) with {', '.join(result.keys)}")
        for where in result.signatures:
            print(f"  signature: {where}")
    return EXIT_OK


def _registry_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="talk plain HTTP to this registry (loopback registries always are)",
    )
    parser.add_argument(
        "--registry-auth-file",
        type=Path,
        default=None,
        help="Docker config.json with `auths` (default ~/.docker)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per registry call")


def add_trust_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `keygen`, `sign` and `verify`; each parser's `func` returns an exit code."""
    keygen = subparsers.add_parser("keygen", help="generate a cosign-format key pair")
    keygen.add_argument("--output-key-prefix", default="cosign", help="writes PREFIX.key and PREFIX.pub")
    keygen.add_argument("--password-file", type=Path, default=None, help=f"else ${PASSWORD_ENV}")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")
    keygen.add_argument(
        "--format",
        choices=("sigstore", "legacy"),
        default="sigstore",
        help="legacy: ENCRYPTED COSIGN PRIVATE KEY, scrypt N=32768 (podman/skopeo before 1.12)",
    )
    keygen.set_defaults(func=cmd_keygen)

    sign = subparsers.add_parser("sign", help="sign an image (cosign-compatible .sig attachment)")
    sign.add_argument("image")
    sign.add_argument("--key", required=True, help="encrypted cosign private key")
    sign.add_argument("--password-file", type=Path, default=None, help=f"else ${PASSWORD_ENV}")
    sign.add_argument(
        "--recursive", action="store_true", help="a multi-arch index: sign it and every platform manifest"
    )
    _registry_options(sign)
    sign.set_defaults(func=cmd_sign)

    verify = subparsers.add_parser("verify", help="verify an image's signatures")
    verify.add_argument("image")
    verify.add_argument("--key", required=True, action="append", help="trusted public key (repeat: any of)")
    verify.add_argument("--output", choices=("text", "json"), default="text")
    verify.add_argument("--rekor", choices=[m.value for m in RekorMode], default=RekorMode.IGNORE.value)
    verify.add_argument("--rekor-key", default=None, help="Rekor public key (PEM) for --rekor checks")
    verify.add_argument(
        "--ignore-identity",
        action="store_true",
        help="do not require docker-reference to name this repository",
    )
    _registry_options(verify)
    verify.set_defaults(func=cmd_verify)
