"""Benchmark: cold resolve-and-verify of 50 signed images in parallel (target <= 3 s each).

Run with `.venv/bin/python tests/bench/bench_verify.py`. Not collected by pytest (no test_ prefix).
Starts its own loopback `docker-registry`, pushes `gitdock-test/busybox:1` under 50 repositories,
signs each with gitdock's key and keylessly (a private Sigstore: its own Fulcio CA, CT log and
Rekor key, one ten-minute certificate per image) three ways: a `.sig` layer with a Rekor SET; a
`.sig` layer with a Rekor SET and an RFC 3161 timestamp from its TSA; a bundle v0.3 with a
Rekor v2 entry (inclusion proof + signed checkpoint) and an RFC 3161 timestamp. Then it times
verification of each kind with a fresh client, an empty cache and an unparsed trusted root.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `support`

import base64

from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.runtime.trust.keys import public_key_pem
from gitdock.runtime.trust.policy import KeylessIdentity, TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import RegistryClient
from gitdock.runtime.trust.sign import attach_signature, sign_image
from gitdock.runtime.trust.signature import SIGNATURE_ANNOTATION
from gitdock.runtime.trust.trusted_root import parse_trusted_root
from gitdock.runtime.trust.verify import Verification, VerificationCache, verify_image
from gitdock.specs.reference import ImageReference, parse_reference
from support.docker import TEST_IMAGE
from support.registry import push_image, run_registry
from support.sigstore import EMAIL, ISSUER, PrivateSigstore, Stamp, attach_bundle

IMAGES = 50
WORKERS = 8
TARGET_SECONDS = 3.0


def sign_keyless(
    sigstore: PrivateSigstore,
    refs: list[ImageReference],
    client: RegistryClient,
    *,
    stamp: Stamp | None = None,
) -> None:
    """Attach a keyless `.sig` layer (own certificate, chain, Rekor bundle, `stamp`) to every image."""
    for ref in refs:
        digest = client.resolve_digest(ref)
        sig = sigstore.sign_legacy(ref.repository_ref, digest, stamp=stamp)
        extra = {k: v for k, v in sig.annotations.items() if k != SIGNATURE_ANNOTATION}
        raw = base64.b64decode(sig.annotations[SIGNATURE_ANNOTATION])
        attach_signature(ref, digest, sig.payload, raw, client, annotations=extra)


def sign_v2_bundles(sigstore: PrivateSigstore, refs: list[ImageReference], client: RegistryClient) -> None:
    """Attach a bundle with a Rekor v2 entry and an RFC 3161 timestamp to every image."""
    for ref in refs:
        digest = client.resolve_digest(ref)
        attach_bundle(client, ref, digest, sigstore.sign_bundle(digest, rekor="v2", stamp=Stamp()))


def time_cold(refs: list[ImageReference], policy: TrustPolicy) -> tuple[float, list[Verification]]:
    """Seconds to verify every ref with a fresh client, an empty cache and an unparsed root."""
    parse_trusted_root.cache_clear()
    cache = VerificationCache()
    with RegistryClient() as client:
        started = time.monotonic()
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(lambda r: verify_image(r, policy, client, cache=cache), refs))
        return time.monotonic() - started, results


def main() -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    sigstore = PrivateSigstore()
    policy = TrustPolicy(
        keys={"bench": TrustKey(public_key=public_key_pem(key.public_key()).decode())},
        rules=(TrustRule(pattern="127.0.0.1:*/bench/*", keys=("bench",)),),
    )
    keyless = TrustPolicy(
        rules=(TrustRule(pattern="127.0.0.1:*", keyless=(KeylessIdentity(identity=EMAIL, issuer=ISSUER),)),),
        trusted_root=sigstore.trusted_root(),
    )
    with run_registry() as registry:
        refs = [parse_reference(f"{registry.host}/bench/app{i}:1") for i in range(IMAGES)]
        keyless_refs = [parse_reference(f"{registry.host}/keyless/app{i}:1") for i in range(IMAGES)]
        stamped_refs = [parse_reference(f"{registry.host}/keyless/tsa{i}:1") for i in range(IMAGES)]
        v2_refs = [parse_reference(f"{registry.host}/keyless/v2-{i}:1") for i in range(IMAGES)]
        every = refs + keyless_refs + stamped_refs + v2_refs
        started = time.monotonic()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda r: push_image(TEST_IMAGE, r.canonical), every))
        with RegistryClient() as client:
            for ref in refs:
                sign_image(ref, key, client)
            sign_keyless(sigstore, keyless_refs, client)
            sign_keyless(sigstore, stamped_refs, client, stamp=Stamp())
            sign_v2_bundles(sigstore, v2_refs, client)
        print(f"setup: pushed and signed {len(every)} images in {time.monotonic() - started:.1f} s")

        cold, results = time_cold(refs, policy)
        cold_keyless, keyless_results = time_cold(keyless_refs, keyless)
        cold_stamped, stamped_results = time_cold(stamped_refs, keyless)
        cold_v2, v2_results = time_cold(v2_refs, keyless)
        cache = VerificationCache()
        with RegistryClient() as client:
            pinned = [r.with_digest(client.resolve_digest(r)) for r in refs]
            list(map(lambda r: verify_image(r, policy, client, cache=cache), pinned))
            started = time.monotonic()
            with ThreadPoolExecutor(WORKERS) as pool:
                list(pool.map(lambda r: verify_image(r, policy, client, cache=cache), pinned))
            warm = time.monotonic() - started
    assert all(r.keys == ("bench",) for r in results)
    signer = (f"keyless:{EMAIL} from {ISSUER}",)
    assert all(r.keys == signer for r in keyless_results + stamped_results + v2_results)
    ok = max(cold, cold_keyless, cold_stamped, cold_v2) <= TARGET_SECONDS
    print(f"cold resolve+verify of {IMAGES} key-signed images, {WORKERS} threads: {cold:.3f} s")
    print(f"cold resolve+verify of {IMAGES} keyless images (SET), {WORKERS} threads: {cold_keyless:.3f} s")
    print(
        f"cold resolve+verify of {IMAGES} keyless images (SET + RFC 3161 timestamp), {WORKERS} threads:"
        f" {cold_stamped:.3f} s"
    )
    print(
        f"cold resolve+verify of {IMAGES} keyless bundles (Rekor v2 + RFC 3161 timestamp), {WORKERS} threads:"
        f" {cold_v2:.3f} s"
    )
    print(f"(target {TARGET_SECONDS} s each) {'OK' if ok else 'SLOW'}")
    print(f"warm (cached, digest-pinned) verify of {IMAGES} images: {warm * 1000:.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
