"""Benchmark: cold resolve-and-verify of 50 signed images in parallel (target <= 3 s).

Run with `.venv/bin/python tests/bench/bench_verify.py`. Not collected by pytest (no test_ prefix).
Starts its own loopback `docker-registry`, pushes `gitdock-test/busybox:1` under 50 repositories,
signs each with gitdock, then times verification with a fresh client and an empty cache.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for `support`

from cryptography.hazmat.primitives.asymmetric import ec

from gitdock.runtime.trust.keys import public_key_pem
from gitdock.runtime.trust.policy import TrustKey, TrustPolicy, TrustRule
from gitdock.runtime.trust.registry import RegistryClient
from gitdock.runtime.trust.sign import sign_image
from gitdock.runtime.trust.verify import VerificationCache, verify_image
from gitdock.specs.reference import parse_reference
from support.docker import TEST_IMAGE
from support.registry import push_image, run_registry

IMAGES = 50
WORKERS = 8
TARGET_SECONDS = 3.0


def main() -> int:
    key = ec.generate_private_key(ec.SECP256R1())
    policy = TrustPolicy(
        keys={"bench": TrustKey(public_key=public_key_pem(key.public_key()).decode())},
        rules=(TrustRule(pattern="127.0.0.1:*", keys=("bench",)),),
    )
    with run_registry() as registry:
        refs = [parse_reference(f"{registry.host}/bench/app{i}:1") for i in range(IMAGES)]
        started = time.monotonic()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda r: push_image(TEST_IMAGE, r.canonical), refs))
        with RegistryClient() as client:
            for ref in refs:
                sign_image(ref, key, client)
        print(f"setup: pushed and signed {IMAGES} images in {time.monotonic() - started:.1f} s")

        cache = VerificationCache()
        with RegistryClient() as client:
            started = time.monotonic()
            with ThreadPoolExecutor(WORKERS) as pool:
                results = list(pool.map(lambda r: verify_image(r, policy, client, cache=cache), refs))
            cold = time.monotonic() - started
            started = time.monotonic()
            with ThreadPoolExecutor(WORKERS) as pool:
                list(
                    pool.map(
                        lambda r: verify_image(r.with_digest(results[0].digest), policy, client, cache=cache),
                        refs,
                    )
                )
            warm = time.monotonic() - started
    assert all(r.keys == ("bench",) for r in results)
    verdict = "OK" if cold <= TARGET_SECONDS else "SLOW"
    print(f"cold resolve+verify of {IMAGES} images, {WORKERS} threads: {cold:.3f} s", end=" ")
    print(f"(target {TARGET_SECONDS} s) {verdict}")
    print(f"warm (cached, digest-pinned) verify of {IMAGES} images: {warm * 1000:.1f} ms")
    return 0 if cold <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
