"""Benchmark signed-commit verification: what it adds to a poll.

Run: .venv/bin/python tests/bench/bench_commit_verify.py [--rounds 30]

1. one verification that runs the tool (a new head): median ms for an SSH signature
   (ssh-keygen -Y find-principals + verify) and an OpenPGP one (gpg --verify in the private
   GNUPGHOME), and for a new revision of 10 commits in mode ``all``;
2. a poll that finds no new commit: the fetch stage (GitCache.fetch of a file:// remote) with
   verification off, and on (the remembered head: key files re-read, no tool run).

Keys and repositories are made in a temporary directory, removed at the end. Not a pytest
module: the name does not match test_*.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from gitdock.agent.commits import VerifyMode  # noqa: E402  (tests/ goes on sys.path first)
from gitdock.agent.git import GitCache, GitRemote  # noqa: E402
from gitdock.agent.signers import CommitVerifier, GpgVerifier, SshVerifier  # noqa: E402
from support.signing import Keys, SigningRepo  # noqa: E402

FILES = {"deploy/compose.yaml": "services: {}\n"}


def median_ms(rounds: int, run: Callable[[], object]) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory(prefix="gitdock-bench-sign-") as tmp:
        root = Path(tmp)
        keys = Keys(root / "keys")
        try:
            bench(root, keys, rounds)
        finally:
            keys.close()


def bench(root: Path, keys: Keys, rounds: int) -> None:
    alice, carol = keys.ssh("alice", "alice@example.com"), keys.gpg("Carol", "carol@example.com")
    allowed = root / "allowed_signers"
    allowed.write_text(alice.allowed_line())
    repo = SigningRepo(root / "git", keys)
    ssh_sha = repo.commit(FILES, ssh=alice)
    gpg_sha = repo.commit({**FILES, "a": "1"}, gpg=carol)
    base = gpg_sha
    for n in range(10):
        repo.commit({**FILES, "a": f"n{n}"}, ssh=alice, push=False)
    repo.push()
    cache = GitCache(root / "cache")
    remote = GitRemote(repo.url, "main")
    head = cache.fetch(remote)

    ssh = SshVerifier(allowed)
    ssh.load()
    gpg = GpgVerifier([carol.public])
    gpg.load()
    ssh_commit, gpg_commit = cache.read_signature(head, ssh_sha), cache.read_signature(head, gpg_sha)
    print(
        f"ssh verification (ssh-keygen):  {median_ms(rounds, lambda: ssh.verify(ssh_commit)):7.2f} ms median"
    )
    print(
        f"gpg verification (gpg):         {median_ms(rounds, lambda: gpg.verify(gpg_commit)):7.2f} ms median"
    )

    def cold_all() -> None:
        verifier = CommitVerifier(VerifyMode.ALL, ssh=SshVerifier(allowed), max_commits=100)
        verifier.verify_revision(cache, head, base)

    print(f"new revision, mode all, 10 commits: {median_ms(max(3, rounds // 5), cold_all):7.2f} ms median")
    gpg.close()

    warm = CommitVerifier(VerifyMode.ALL, ssh=SshVerifier(allowed), max_commits=100)
    warm.verify_revision(cache, head, base)
    runs = warm.tool_runs
    off = median_ms(rounds, lambda: cache.fetch(remote))

    def poll_on() -> None:
        revision = cache.fetch(remote)
        warm.verify_revision(cache, revision, revision.sha)

    on = median_ms(rounds, poll_on)
    assert warm.tool_runs == runs, "a no-change poll ran a tool"
    verify_only = median_ms(rounds, lambda: warm.verify_revision(cache, head, head.sha))
    print(f"no-change poll, verification off: {off:7.2f} ms median (fetch stage)")
    print(f"no-change poll, verification on:  {on:7.2f} ms median (+{verify_only:.3f} ms verification)")


if __name__ == "__main__":
    main()
