"""Signed commits: the pure parsers and decisions, then real keys, real `git commit -S`, real git.

Keys are made in each test (ssh-keygen, gpg in a private GNUPGHOME); commits are signed by git
itself and fetched by the agent's GitCache; verification runs the real ssh-keygen and gpg.
Every negative test checks that what it feeds the verifier really differs from a good input.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import stat
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pygit2
import pytest

from gitdock.agent.commits import (
    BadCommitSignature,
    GpgStatus,
    SignatureFormat,
    Signer,
    SigningKeysError,
    TooManyCommits,
    UnsignedCommit,
    UntrustedSigner,
    VerifyMode,
    detect_format,
    judge_gpg_status,
    parse_allowed_signers,
    parse_gpg_status,
    parse_ssh_signature,
    parse_ssh_verify_output,
    select_commits,
    verify_time,
)
from gitdock.agent.config import ConfigError, parse_config
from gitdock.agent.git import Ancestry, GitCache, GitRemote, Revision
from gitdock.agent.signers import CommitVerifier, GpgVerifier, SshVerifier
from support.signing import SSH_KEYGEN, Keys, SigningRepo

SHA = "0123456789abcdef0123456789abcdef01234567"
FILES = {"deploy/compose.yaml": "services: {}\n"}

# What gpg 2.2 printed on --status-fd for a good, a tampered and an unknown-key verification.
GOOD_STATUS = """\
[GNUPG:] NEWSIG carol@example.com
[GNUPG:] KEY_CONSIDERED 3CF7F6DF39AFD8158E9906880340D7AC096641E4 0
[GNUPG:] SIG_ID zJwIqVg10gJI0Mxz+cXaZBtWY44 2026-12-01 1796124614
[GNUPG:] GOODSIG 0340D7AC096641E4 Carol <carol@example.com>
[GNUPG:] VALIDSIG 1111111111111111111111111111111111111111 2026-12-01 1796124614 0 4 0 22 8 00 \
3CF7F6DF39AFD8158E9906880340D7AC096641E4
[GNUPG:] TRUST_UNDEFINED 0 pgp
"""
BAD_STATUS = """\
[GNUPG:] NEWSIG carol@example.com
[GNUPG:] BADSIG 0340D7AC096641E4 Carol <carol@example.com>
[GNUPG:] FAILURE gpg-exit 33554433
"""
NO_KEY_STATUS = """\
[GNUPG:] NEWSIG carol@example.com
[GNUPG:] ERRSIG 0340D7AC096641E4 22 8 00 1796124614 9 3CF7F6DF39AFD8158E9906880340D7AC096641E4
[GNUPG:] NO_PUBKEY 0340D7AC096641E4
"""


# --- pure ----------------------------------------------------------------------------------


def test_allowed_signers_parse_principals_options_and_keys(tmp_path: Path) -> None:
    key = Keys(tmp_path).ssh("alice", "alice@example.com")
    text = (
        "# team\n\n"
        f"alice@example.com,ops@example.com {key.public} a comment\n"
        '"ci@example.com" namespaces="git,file",valid-after="20240101",'
        f'valid-before="20300101Z" {key.public}\n'
        f"* cert-authority {key.public}\n"
    )
    signers = parse_allowed_signers(text)
    assert [s.principals for s in signers] == [
        ("alice@example.com", "ops@example.com"),
        ("ci@example.com",),
        ("*",),
    ]
    assert signers[1].options == (
        ("namespaces", "git,file"),
        ("valid-after", "20240101"),
        ("valid-before", "20300101Z"),
    )
    assert signers[2].options == (("cert-authority", None),)
    assert {s.fingerprint for s in signers} == {key.fingerprint}
    assert [s.line for s in signers] == [3, 4, 5]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("alice@example.com bogus-option {key}", "unknown option 'bogus-option'"),
        ("alice@example.com valid-after=20240101 {key}", "the value must be in double quotes"),
        ('alice@example.com valid-before="tomorrow" {key}', "'tomorrow' is not YYYYMMDD"),
        ("alice@example.com ssh-ed25519 notbase64!", "not a base64 SSH public key"),
        ('"alice@example.com {key}', "unterminated quote"),
        ("alice@example.com", "expected: principals"),
    ],
)
def test_allowed_signers_refuse_a_malformed_line_naming_file_and_line(
    tmp_path: Path, line: str, why: str
) -> None:
    key = Keys(tmp_path).ssh("alice", "alice@example.com")
    text = f"# header\n{line.format(key=key.public)}\n"
    with pytest.raises(SigningKeysError) as caught:
        parse_allowed_signers(text, "keys/allowed_signers")
    assert str(caught.value).startswith("keys/allowed_signers:2: ")
    assert why in str(caught.value)


def test_allowed_signers_key_of_one_type_labelled_as_another_is_refused(tmp_path: Path) -> None:
    key = Keys(tmp_path).ssh("alice", "alice@example.com")
    blob = key.public.split()[1]
    with pytest.raises(SigningKeysError, match="the key is ssh-ed25519, not ssh-rsa"):
        parse_allowed_signers(f"alice ssh-rsa {blob}\n")


def test_allowed_signers_without_any_key_line_is_refused() -> None:
    with pytest.raises(SigningKeysError, match="no allowed signer"):
        parse_allowed_signers("# nobody\n")


def test_ssh_signature_parse_names_key_and_namespace_as_ssh_keygen_does(tmp_path: Path) -> None:
    key = Keys(tmp_path).ssh("alice", "alice@example.com")
    data = tmp_path / "data"
    data.write_bytes(b"payload")
    subprocess.run(
        [SSH_KEYGEN, "-q", "-Y", "sign", "-f", str(key.private), "-n", "git", str(data)], check=True
    )
    armored = (tmp_path / "data.sig").read_bytes()
    parsed = parse_ssh_signature(armored)
    assert (parsed.key_type, parsed.namespace, parsed.hash_algorithm) == ("ssh-ed25519", "git", "sha512")
    assert parsed.fingerprint == key.fingerprint
    assert detect_format(armored) is SignatureFormat.SSH
    with pytest.raises(ValueError, match="SSHSIG magic"):
        lines = armored.decode().splitlines()
        body = base64.b64decode("".join(lines[1:-1]))
        forged = b"NOTSIG" + body[6:]
        assert forged != body
        parse_ssh_signature(f"{lines[0]}\n{base64.b64encode(forged).decode()}\n{lines[-1]}\n".encode())


def test_detect_format_tells_ssh_openpgp_and_x509_apart() -> None:
    assert detect_format(b"-----BEGIN PGP SIGNATURE-----\n...") is SignatureFormat.OPENPGP
    assert detect_format(b"-----BEGIN SIGNED MESSAGE-----\n...") is SignatureFormat.X509
    assert detect_format(b"garbage") is None


def test_ssh_verify_output_gives_principal_and_fingerprint() -> None:
    line = (
        'Good "git" signature for alice@example.com with ED25519 key '
        "SHA256:Oe1pvpKHYXGShMHHH+sMH1bEED9Cbh4ZmpEGCHlU5WM\n"
    )
    assert parse_ssh_verify_output(line) == (
        "alice@example.com",
        "SHA256:Oe1pvpKHYXGShMHHH+sMH1bEED9Cbh4ZmpEGCHlU5WM",
    )
    assert parse_ssh_verify_output("Could not verify signature.\n") is None


def test_verify_time_is_the_commit_time_in_utc() -> None:
    assert verify_time(datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC)) == "20240203040506Z"


def test_gpg_status_good_signature_names_uid_and_primary_fingerprint() -> None:
    status = parse_gpg_status(GOOD_STATUS)
    assert status.signatures == 1
    assert status.valid_fingerprint == "1" * 40  # the signing subkey
    signer = judge_gpg_status(status, SHA)
    assert signer == Signer(
        SignatureFormat.OPENPGP, "Carol <carol@example.com>", "3CF7F6DF39AFD8158E9906880340D7AC096641E4"
    )


def test_gpg_status_bad_signature_is_refused_naming_the_key() -> None:
    with pytest.raises(BadCommitSignature, match=r"bad OpenPGP signature by key 0340D7AC096641E4 \(Carol"):
        judge_gpg_status(parse_gpg_status(BAD_STATUS), SHA)


def test_gpg_status_unknown_key_is_an_untrusted_signer_with_its_fingerprint() -> None:
    with pytest.raises(UntrustedSigner, match="OpenPGP key 3CF7F6DF39AFD8158E9906880340D7AC096641E4, which"):
        judge_gpg_status(parse_gpg_status(NO_KEY_STATUS), SHA)


@pytest.mark.parametrize(
    ("keyword", "why"),
    [("EXPKEYSIG", "expired OpenPGP key"), ("REVKEYSIG", "revoked OpenPGP key"), ("EXPSIG", "signature")],
)
def test_gpg_status_expired_or_revoked_is_refused(keyword: str, why: str) -> None:
    text = GOOD_STATUS.replace("GOODSIG", keyword).replace("[GNUPG:] VALIDSIG", "[GNUPG:] X")
    with pytest.raises(BadCommitSignature, match=why):
        judge_gpg_status(parse_gpg_status(text), SHA)


def test_gpg_status_two_signatures_or_none_are_refused() -> None:
    with pytest.raises(BadCommitSignature, match="2 OpenPGP signatures"):
        judge_gpg_status(parse_gpg_status(GOOD_STATUS + GOOD_STATUS), SHA)
    with pytest.raises(BadCommitSignature, match="did not report a good signature"):
        judge_gpg_status(GpgStatus(), SHA)


def test_select_commits_head_mode_checks_the_head_only() -> None:
    assert select_commits(VerifyMode.HEAD, "c", ["c", "b", "a"], False, 2) == ["c"]


def test_select_commits_all_mode_checks_oldest_first_and_the_head_last() -> None:
    assert select_commits(VerifyMode.ALL, "c", ["c", "b", "a"], True, 5) == ["a", "b", "c"]


def test_select_commits_all_mode_refuses_a_range_past_the_limit() -> None:
    with pytest.raises(TooManyCommits, match="more than 2 new commits"):
        select_commits(VerifyMode.ALL, "c", ["c", "b"], False, 2)


# --- real keys, real git ---------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[Keys]:
    made = Keys(tmp_path / "keys")
    yield made
    made.close()


@pytest.fixture
def repo(tmp_path: Path, keys: Keys) -> SigningRepo:
    return SigningRepo(tmp_path / "git", keys)


@pytest.fixture
def cache(tmp_path: Path) -> GitCache:
    return GitCache(tmp_path / "cache")


def fetch(cache: GitCache, repo: SigningRepo) -> Revision:
    return cache.fetch(GitRemote(repo.url, "main"))


def open_commit(cache: GitCache, repo: SigningRepo, sha: str) -> tuple[pygit2.Repository, pygit2.Commit]:
    """The agent's clone and a commit in it, to forge commits from."""
    clone = pygit2.Repository(str(cache.path_for(GitRemote(repo.url, "main"))))
    commit = clone.get(sha)
    assert isinstance(commit, pygit2.Commit)
    return clone, commit


def allowed(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "allowed_signers"
    path.write_text("".join(lines))
    return path


def ssh_verifier(path: Path, mode: VerifyMode = VerifyMode.HEAD, max_commits: int = 100) -> CommitVerifier:
    return CommitVerifier(mode, ssh=SshVerifier(path), max_commits=max_commits)


def test_ssh_signed_head_verifies_and_names_principal_and_fingerprint(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    sha = repo.commit(FILES, ssh=alice)
    verifier = ssh_verifier(allowed(tmp_path, alice.allowed_line('namespaces="git"')))
    verified = verifier.verify_revision(cache, fetch(cache, repo), base=None)
    assert verified.signer == Signer(SignatureFormat.SSH, "alice@example.com", alice.fingerprint)
    assert (
        verified.describe() == f"commit {sha[:12]} signed by alice@example.com (SSH key {alice.fingerprint})"
    )


def test_unsigned_head_is_refused(tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    sha = repo.commit(FILES, "not signed")
    with pytest.raises(UnsignedCommit, match=rf"commit {sha[:12]} \('not signed'\) is not signed") as caught:
        ssh_verifier(allowed(tmp_path, alice.allowed_line())).verify_revision(cache, fetch(cache, repo), None)
    assert caught.value.sha == sha


def test_signed_by_a_key_not_allowed_is_refused_naming_the_key(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice, mallory = keys.ssh("alice", "alice@example.com"), keys.ssh("mallory", "mallory@example.com")
    assert alice.fingerprint != mallory.fingerprint
    repo.commit(FILES, ssh=mallory)
    verifier = ssh_verifier(allowed(tmp_path, alice.allowed_line()))
    with pytest.raises(
        UntrustedSigner,
        match=re.escape(
            f"signed by SSH key {mallory.fingerprint} (ssh-ed25519), which allowed_signers does not allow"
        ),
    ):
        verifier.verify_revision(cache, fetch(cache, repo), None)


def test_a_tampered_commit_is_refused(tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    good = repo.commit(FILES, "deploy v1", ssh=alice)
    revision = fetch(cache, repo)
    clone, commit = open_commit(cache, repo, good)
    signature, payload = commit.gpg_signature
    forged_payload = payload.replace(b"deploy v1", b"deploy v2")
    assert forged_payload != payload
    forged = str(clone.create_commit_with_signature(forged_payload.decode(), signature.decode()))
    verifier = ssh_verifier(allowed(tmp_path, alice.allowed_line()))
    with pytest.raises(
        BadCommitSignature,
        match=re.escape(
            f"commit {forged[:12]}: the signature by SSH key {alice.fingerprint} (ssh-ed25519) "
            "for alice@example.com does not verify: Signature verification failed"
        ),
    ):
        verifier.verify_revision(cache, dataclasses.replace(revision, sha=forged), None)


def test_a_signature_for_another_namespace_is_refused(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    unsigned = repo.commit(FILES)
    revision = fetch(cache, repo)
    clone, commit = open_commit(cache, repo, unsigned)
    payload = commit.read_raw()
    (tmp_path / "payload").write_bytes(payload)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-Y", "sign", "-f", str(alice.private), "-n", "file", str(tmp_path / "payload")],
        check=True,
    )
    signed = str(clone.create_commit_with_signature(payload.decode(), (tmp_path / "payload.sig").read_text()))
    verifier = ssh_verifier(allowed(tmp_path, alice.allowed_line()))
    with pytest.raises(BadCommitSignature, match="for namespace 'file', not 'git'"):
        verifier.verify_revision(cache, dataclasses.replace(revision, sha=signed), None)


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ('valid-before="20200101"', "key has expired"),  # the commits are dated 2023
        ('valid-after="20300101"', "key is not yet valid"),
        ('namespaces="file"', 'not permitted for use in signature namespace "git"'),
    ],
)
def test_allowed_signers_options_are_honoured_at_the_commit_time(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache, options: str, why: str
) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    repo.commit(FILES, ssh=alice)
    revision = fetch(cache, repo)
    assert ssh_verifier(allowed(tmp_path, alice.allowed_line())).verify_revision(cache, revision, None)
    with pytest.raises((UntrustedSigner, BadCommitSignature), match=why):
        ssh_verifier(allowed(tmp_path, alice.allowed_line(options))).verify_revision(cache, revision, None)


def test_openpgp_signed_head_verifies_in_a_private_keyring(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    carol = keys.gpg("Carol", "carol@example.com")
    sha = repo.commit(FILES, gpg=carol)
    gpg = GpgVerifier([carol.public])
    verifier = CommitVerifier(VerifyMode.HEAD, gpg=gpg)
    try:
        verified = verifier.verify_revision(cache, fetch(cache, repo), None)
        assert verified.signer == Signer(SignatureFormat.OPENPGP, carol.uid, carol.fingerprint)
        assert verified.sha == sha
        home = gpg._home
        assert home is not None and home != keys.gnupghome
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        verifier.close()
    assert not home.exists()


def test_openpgp_signature_by_a_key_not_in_the_keyring_is_refused_naming_its_fingerprint(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    carol, dave = keys.gpg("Carol", "carol@example.com"), keys.gpg("Dave", "dave@example.com")
    repo.commit(FILES, gpg=dave)
    verifier = CommitVerifier(VerifyMode.HEAD, gpg=GpgVerifier([carol.public]))
    try:
        with pytest.raises(UntrustedSigner, match=f"OpenPGP key {dave.fingerprint}, which verify.keys.gpg"):
            verifier.verify_revision(cache, fetch(cache, repo), None)
    finally:
        verifier.close()


def test_openpgp_tampered_commit_is_refused(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    carol = keys.gpg("Carol", "carol@example.com")
    good = repo.commit(FILES, "deploy v1", gpg=carol)
    revision = fetch(cache, repo)
    clone, commit = open_commit(cache, repo, good)
    signature, payload = commit.gpg_signature
    forged_payload = payload.replace(b"deploy v1", b"deploy v2")
    assert forged_payload != payload
    forged = str(clone.create_commit_with_signature(forged_payload.decode(), signature.decode()))
    verifier = CommitVerifier(VerifyMode.HEAD, gpg=GpgVerifier([carol.public]))
    try:
        with pytest.raises(BadCommitSignature, match="bad OpenPGP signature"):
            verifier.verify_revision(cache, dataclasses.replace(revision, sha=forged), None)
    finally:
        verifier.close()


def test_a_format_without_configured_keys_is_refused(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice, carol = keys.ssh("alice", "alice@example.com"), keys.gpg("Carol", "carol@example.com")
    repo.commit(FILES, ssh=alice)
    verifier = CommitVerifier(VerifyMode.HEAD, gpg=GpgVerifier([carol.public]))
    try:
        with pytest.raises(UntrustedSigner, match=r"signed with an SSH key; verify\.keys\.ssh is not set"):
            verifier.verify_revision(cache, fetch(cache, repo), None)
    finally:
        verifier.close()


def test_mode_all_refuses_an_unsigned_commit_behind_a_signed_head(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    base = repo.commit(FILES, ssh=alice)
    middle = repo.commit({**FILES, "a": "1"}, "sneaked in", push=False)
    head = repo.commit({**FILES, "a": "2"}, ssh=alice)
    verifier = ssh_verifier(allowed(tmp_path, alice.allowed_line()), VerifyMode.ALL)
    revision = fetch(cache, repo)
    assert ssh_verifier(allowed(tmp_path, alice.allowed_line())).verify_revision(
        cache, revision, base
    )  # head mode
    with pytest.raises(UnsignedCommit) as caught:
        verifier.verify_revision(cache, revision, base)
    assert caught.value.sha == middle
    assert f"the head {head[:12]} brings it: 1 of 2 commits since {base[:12]}" in str(caught.value)


def test_mode_all_checks_every_commit_since_the_base(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice, carol = keys.ssh("alice", "alice@example.com"), keys.gpg("Carol", "carol@example.com")
    base = repo.commit(FILES)  # deployed before verification was turned on
    repo.commit({**FILES, "a": "1"}, gpg=carol, push=False)
    repo.commit({**FILES, "a": "2"}, ssh=alice)
    verifier = CommitVerifier(
        VerifyMode.ALL,
        ssh=SshVerifier(allowed(tmp_path, alice.allowed_line())),
        gpg=GpgVerifier([carol.public]),
    )
    try:
        verified = verifier.verify_revision(cache, fetch(cache, repo), base)
    finally:
        verifier.close()
    assert (verified.checked, verified.ancestry, verified.base) == (2, Ancestry.DESCENDANT, base)
    assert verified.signer.principal == "alice@example.com"


def test_mode_all_after_a_force_push_walks_back_to_the_common_ancestor(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    fork = repo.commit(FILES, ssh=alice)
    deployed = repo.commit({**FILES, "a": "1"}, ssh=alice)
    fetch(cache, repo)  # the agent fetched the deployed commit before the force-push
    repo.rewrite(fork)
    unsigned = repo.commit({**FILES, "a": "rewritten"}, push=False)
    repo.commit({**FILES, "a": "rewritten 2"}, ssh=alice, push=False)
    repo.push(force=True)
    revision = fetch(cache, repo)
    walk = cache.walk_new_commits(revision, deployed, 100)
    assert (walk.ancestry, walk.base, len(walk.shas)) == (Ancestry.REWRITTEN, fork, 2)
    with pytest.raises(UnsignedCommit) as caught:
        ssh_verifier(allowed(tmp_path, alice.allowed_line()), VerifyMode.ALL).verify_revision(
            cache, revision, deployed
        )
    assert caught.value.sha == unsigned


def test_mode_all_after_a_force_push_of_unrelated_history_checks_the_head(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    deployed = repo.commit(FILES, ssh=alice)
    fetch(cache, repo)
    repo.rewrite()
    repo.commit({**FILES, "a": "new root"}, push=False)
    head = repo.commit({**FILES, "a": "new root 2"}, ssh=alice, push=False)
    repo.push(force=True)
    verified = ssh_verifier(allowed(tmp_path, alice.allowed_line()), VerifyMode.ALL).verify_revision(
        cache, fetch(cache, repo), deployed
    )
    assert (verified.sha, verified.checked, verified.ancestry) == (head, 1, Ancestry.UNRELATED)


def test_mode_all_refuses_more_commits_than_max_commits(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice = keys.ssh("alice", "alice@example.com")
    base = repo.commit(FILES, ssh=alice)
    for n in range(3):
        repo.commit({**FILES, "a": str(n)}, ssh=alice, push=False)
    repo.push()
    revision = fetch(cache, repo)
    with pytest.raises(TooManyCommits, match="more than 2 new commits"):
        ssh_verifier(allowed(tmp_path, alice.allowed_line()), VerifyMode.ALL, max_commits=2).verify_revision(
            cache, revision, base
        )
    assert (
        ssh_verifier(allowed(tmp_path, alice.allowed_line()), VerifyMode.ALL, max_commits=3)
        .verify_revision(cache, revision, base)
        .checked
        == 3
    )


def test_a_verified_head_is_remembered_until_a_key_file_changes(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    alice, bob = keys.ssh("alice", "alice@example.com"), keys.ssh("bob", "bob@example.com")
    repo.commit(FILES, ssh=alice)
    path = allowed(tmp_path, alice.allowed_line(), bob.allowed_line())
    verifier = ssh_verifier(path)
    revision = fetch(cache, repo)
    verifier.verify_revision(cache, revision, None)
    verifier.verify_revision(cache, revision, revision.sha)
    assert verifier.tool_runs == 1
    path.write_text(bob.allowed_line())  # alice's key is withdrawn
    with pytest.raises(UntrustedSigner):
        verifier.verify_revision(cache, revision, revision.sha)
    assert verifier.tool_runs == 2


def test_unreadable_or_malformed_keys_are_refused_naming_the_file(
    tmp_path: Path, keys: Keys, repo: SigningRepo, cache: GitCache
) -> None:
    repo.commit(FILES, ssh=keys.ssh("alice", "alice@example.com"))
    revision = fetch(cache, repo)
    with pytest.raises(SigningKeysError, match=r"verify.keys.ssh .*missing: No such file"):
        ssh_verifier(tmp_path / "missing").verify_revision(cache, revision, None)
    bad = allowed(tmp_path, "alice@example.com ssh-ed25519 AAAA!!\n")
    with pytest.raises(SigningKeysError, match=r"allowed_signers:1: "):
        ssh_verifier(bad).verify_revision(cache, revision, None)
    not_a_key = tmp_path / "nothing.asc"
    not_a_key.write_text("hello\n")
    verifier = CommitVerifier(VerifyMode.HEAD, gpg=GpgVerifier([not_a_key]))
    with pytest.raises(SigningKeysError, match=r"nothing\.asc: no OpenPGP public key imported"):
        verifier.verify_revision(cache, revision, None)
    verifier.close()


def test_agent_config_reads_verify_and_refuses_a_bad_one(tmp_path: Path) -> None:
    head = "sources:\n  - name: app\n    url: file:///srv/app.git\n"
    config = parse_config(
        head + "    verify: {mode: all, keys: {ssh: keys/allowed, gpg: keys/ci.asc}, max_commits: 5}\n",
        str(tmp_path / "agent.yaml"),
    )
    verify = config.sources[0].verify
    assert verify is not None
    assert (verify.mode, verify.keys.gpg, verify.max_commits) == (VerifyMode.ALL, (Path("keys/ci.asc"),), 5)
    verifier = verify.verifier(config.base_dir)
    assert verifier.ssh is not None and verifier.ssh.allowed_signers == tmp_path / "keys/allowed"
    with pytest.raises(
        ConfigError, match=r"agent.yaml:4:\d+: sources\[0\].verify.keys: verify.keys needs `ssh`"
    ):
        parse_config(head + "    verify: {keys: {}}\n", str(tmp_path / "agent.yaml"))
    with pytest.raises(ConfigError, match=r"verify.mode: Input should be 'head' or 'all'"):
        parse_config(head + "    verify: {mode: every, keys: {ssh: a}}\n", str(tmp_path / "agent.yaml"))
