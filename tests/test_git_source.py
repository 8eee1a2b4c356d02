"""The git seam against real repositories served over file://, HTTP (git http-backend) and SSH (sshd)."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pygit2
import pytest

from gitdock.agent.git import (
    AmbiguousRef,
    BasicAuth,
    CommitNotFound,
    GitCache,
    GitRemote,
    HostKeyError,
    HostKeyVerdict,
    InvalidRemote,
    PathNotFound,
    RefNotFound,
    RepositoryNotFound,
    SecretRef,
    SourceAuthError,
    SourceUnavailable,
    SshKeyAuth,
    TokenAuth,
    check_host_key,
    display_url,
    has_ssh_support,
    normalise_url,
    parse_known_hosts,
)
from gitdock.specs.errors import PermanentError
from support.gitserver import (
    Exec,
    Link,
    Upstream,
    has_sshd,
    keygen,
    make_tls_certs,
    serve_black_hole,
    serve_http,
    serve_ssh,
)

COMPOSE = "services:\n  web:\n    image: nginx\n"


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "upstream.git")


@pytest.fixture
def cache(tmp_path: Path) -> GitCache:
    return GitCache(tmp_path / "cache", fetch_timeout=20, connect_timeout=5, read_timeout=5)


# --- file:// -------------------------------------------------------------------------------


def test_fetch_resolves_branch_to_commit(upstream: Upstream, cache: GitCache) -> None:
    sha = upstream.commit({"deploy/compose.yaml": COMPOSE}, message="first deploy\n\nbody")
    rev = cache.fetch(GitRemote(upstream.url, "main"))
    assert rev.sha == sha
    assert rev.ref == "refs/heads/main"
    assert rev.summary == "first deploy"
    assert rev.author == "Gitdock Test <test@gitdock.invalid>"
    assert rev.time.tzinfo is not None


def test_fetch_is_incremental_and_sees_new_commits(upstream: Upstream, cache: GitCache) -> None:
    upstream.commit({"a": "1"})
    remote = GitRemote(upstream.url, "refs/heads/main")
    first = cache.fetch(remote)
    assert cache.fetch(remote).sha == first.sha  # no change
    second = upstream.commit({"a": "2"})
    assert cache.fetch(remote).sha == second
    assert cache.fetch_count == 3
    assert len(list(cache.root.iterdir())) == 1  # one bare clone, created once


def test_fetch_follows_force_push(upstream: Upstream, cache: GitCache) -> None:
    upstream.commit({"a": "1"})
    upstream.commit({"a": "2"})
    remote = GitRemote(upstream.url, "main")
    cache.fetch(remote)
    rewritten = upstream.commit({"a": "rewritten"}, parents=[])  # history replaced
    assert cache.fetch(remote).sha == rewritten


def test_deleted_branch_raises_ref_not_found_and_keeps_cache(upstream: Upstream, cache: GitCache) -> None:
    main = upstream.commit({"a": "1"})
    feature = upstream.commit({"b": "1"}, branch="feature")
    cache.fetch(GitRemote(upstream.url, "feature"))
    upstream.delete_branch("feature")
    with pytest.raises(RefNotFound) as info:
        cache.fetch(GitRemote(upstream.url, "feature"))
    assert isinstance(info.value, PermanentError)
    assert "'feature'" in str(info.value) and upstream.url in str(info.value)
    # The cache is intact: other refs and the deleted branch's commit are still there.
    assert cache.fetch(GitRemote(upstream.url, "main")).sha == main
    assert cache.fetch(GitRemote(upstream.url, feature)).sha == feature


def test_tags_resolve_to_peeled_commits(upstream: Upstream, cache: GitCache) -> None:
    first = upstream.commit({"a": "1"})
    upstream.tag("v1", first, annotated=True)
    upstream.tag("light", first, annotated=False)
    upstream.commit({"a": "2"})
    assert cache.fetch(GitRemote(upstream.url, "v1")).sha == first
    rev = cache.fetch(GitRemote(upstream.url, "refs/tags/light"))
    assert (rev.sha, rev.ref) == (first, "refs/tags/light")


def test_sha_ref_must_exist(upstream: Upstream, cache: GitCache) -> None:
    first = upstream.commit({"a": "1"})
    upstream.commit({"a": "2"})
    rev = cache.fetch(GitRemote(upstream.url, first))
    assert (rev.sha, rev.ref) == (first, first)
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(CommitNotFound, match=f"commit {missing} not found in {upstream.url}"):
        cache.fetch(GitRemote(upstream.url, missing))


def test_pinned_sha_in_cache_needs_no_network(upstream: Upstream, cache: GitCache) -> None:
    first = upstream.commit({"a": "1"})
    cache.fetch(GitRemote(upstream.url, "main"))
    count = cache.fetch_count
    assert cache.fetch(GitRemote(upstream.url, first)).sha == first
    assert cache.fetch_count == count


def test_unknown_ref_and_ambiguous_ref(upstream: Upstream, cache: GitCache) -> None:
    sha = upstream.commit({"a": "1"})
    upstream.commit({"a": "1"}, branch="v2")
    upstream.tag("v2", sha)
    with pytest.raises(RefNotFound, match="branch or tag 'nope' not found"):
        cache.fetch(GitRemote(upstream.url, "nope"))
    with pytest.raises(AmbiguousRef, match="both a branch and a tag"):
        cache.fetch(GitRemote(upstream.url, "v2"))
    assert cache.fetch(GitRemote(upstream.url, "refs/tags/v2")).sha == sha


def test_invalid_url_and_ref_are_rejected_at_construction() -> None:
    with pytest.raises(InvalidRemote):
        GitRemote("ftp://example.org/repo", "main")
    with pytest.raises(InvalidRemote):
        GitRemote("https://example.org/repo", "bad..ref")
    with pytest.raises(InvalidRemote):
        GitRemote("https://example.org/repo", "refs/remotes/x")


def test_missing_repository_is_permanent(tmp_path: Path, cache: GitCache) -> None:
    with pytest.raises(RepositoryNotFound):
        cache.fetch(GitRemote(f"file://{tmp_path}/nothing-here.git", "main"))


def test_two_sources_on_one_url_share_one_clone(upstream: Upstream, cache: GitCache) -> None:
    upstream.commit({"a": "1"})
    upstream.commit({"b": "1"}, branch="staging")
    a = GitRemote(upstream.url, "main")
    b = GitRemote(upstream.url + "/", "staging")  # spelt differently, same repository
    assert cache.path_for(a) == cache.path_for(b)
    cache.fetch(a)
    cache.fetch(b)
    assert len(list(cache.root.iterdir())) == 1


def test_concurrent_fetches_of_one_url_coalesce(
    upstream: Upstream, cache: GitCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = upstream.commit({"a": "1"})
    gate = threading.Event()
    real_fetch = cache._fetch_now

    def gated_fetch(path: Path, remote: GitRemote) -> None:
        gate.wait(10)  # hold the first fetch open until every caller has arrived
        real_fetch(path, remote)

    monkeypatch.setattr(cache, "_fetch_now", gated_fetch)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.fetch(GitRemote(upstream.url, "main")).sha))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)
    gate.set()
    for t in threads:
        t.join(20)
    assert results == [sha] * 8
    assert cache.fetch_count == 2  # the running fetch + the one queued behind it, shared by 7 callers


# --- checkout ------------------------------------------------------------------------------


def test_checkout_writes_subpath_with_modes_and_links(
    upstream: Upstream, cache: GitCache, tmp_path: Path
) -> None:
    upstream.commit(
        {
            "deploy/compose.yaml": COMPOSE,
            "deploy/bin/run.sh": Exec(b"#!/bin/sh\necho hi\n"),
            "deploy/current": Link("compose.yaml"),
            "other/secret.txt": "not needed",
        }
    )
    rev = cache.fetch(GitRemote(upstream.url, "main"))
    out = cache.checkout(rev, tmp_path / "snap", "deploy")
    assert out == tmp_path / "snap" / "deploy"
    assert (out / "compose.yaml").read_text() == COMPOSE
    assert os.stat(out / "bin" / "run.sh").st_mode & stat.S_IXUSR
    assert not os.stat(out / "compose.yaml").st_mode & stat.S_IXUSR
    assert os.readlink(out / "current") == "compose.yaml"
    assert not (tmp_path / "snap" / "other").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".snap")] == []  # no temp left


def test_checkout_replaces_existing_snapshot(upstream: Upstream, cache: GitCache, tmp_path: Path) -> None:
    upstream.commit({"a.txt": "1", "gone.txt": "x"})
    remote = GitRemote(upstream.url, "main")
    cache.checkout(cache.fetch(remote), tmp_path / "snap")
    upstream.commit({"a.txt": "2"})
    out = cache.checkout(cache.fetch(remote), tmp_path / "snap")
    assert (out / "a.txt").read_text() == "2"
    assert not (out / "gone.txt").exists()


def test_checkout_and_read_file_report_missing_paths(
    upstream: Upstream, cache: GitCache, tmp_path: Path
) -> None:
    upstream.commit({"deploy/compose.yaml": COMPOSE})
    rev = cache.fetch(GitRemote(upstream.url, "main"))
    assert cache.read_file(rev, "deploy/compose.yaml") == COMPOSE.encode()
    with pytest.raises(PathNotFound):
        cache.checkout(rev, tmp_path / "snap", "nope")
    with pytest.raises(PathNotFound):
        cache.checkout(rev, tmp_path / "snap", "deploy/compose.yaml")
    with pytest.raises(PathNotFound):
        cache.read_file(rev, "deploy")
    with pytest.raises(PathNotFound):
        cache.read_file(rev, "missing.yaml")
    assert not (tmp_path / "snap").exists()


# --- HTTP ----------------------------------------------------------------------------------


def test_fetch_over_http(upstream: Upstream, cache: GitCache) -> None:
    sha = upstream.commit({"a": "1"})
    with serve_http(upstream.path.parent) as server:
        remote = GitRemote(f"{server.base_url}/{upstream.path.name}", "main")
        assert cache.fetch(remote).sha == sha
        second = upstream.commit({"a": "2"})
        assert cache.fetch(remote).sha == second


def test_http_token_auth_from_file(upstream: Upstream, cache: GitCache, tmp_path: Path) -> None:
    sha = upstream.commit({"a": "1"})
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with serve_http(upstream.path.parent, auth=("x-access-token", "s3cret-token")) as server:
        url = f"{server.base_url}/{upstream.path.name}"
        auth = TokenAuth(SecretRef(file=token_file))
        assert cache.fetch(GitRemote(url, "main", auth)).sha == sha
        assert "s3cret-token" not in repr(auth)


def test_http_basic_auth_from_env_and_rejection_keeps_secret_out(
    upstream: Upstream, cache: GitCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.commit({"a": "1"})
    monkeypatch.setenv("GITDOCK_TEST_PASSWORD", "wrong-password-value")
    with serve_http(upstream.path.parent, auth=("deploy", "right-password")) as server:
        url = f"{server.base_url}/{upstream.path.name}"
        with pytest.raises(SourceAuthError) as info:
            cache.fetch(GitRemote(url, "main", BasicAuth("deploy", SecretRef(env="GITDOCK_TEST_PASSWORD"))))
        assert "wrong-password-value" not in str(info.value)
        monkeypatch.setenv("GITDOCK_TEST_PASSWORD", "right-password")  # rotated secret is re-read
        assert cache.fetch(
            GitRemote(url, "main", BasicAuth("deploy", SecretRef(env="GITDOCK_TEST_PASSWORD")))
        )
        with pytest.raises(SourceAuthError, match="none are configured"):
            cache.fetch(GitRemote(url, "main"))
        with pytest.raises(SourceAuthError, match="GITDOCK_TEST_UNSET"):
            cache.fetch(GitRemote(url, "main", TokenAuth(SecretRef(env="GITDOCK_TEST_UNSET"))))


def test_credentials_in_url_never_reach_messages(upstream: Upstream, cache: GitCache) -> None:
    upstream.commit({"a": "1"})
    with serve_http(upstream.path.parent, auth=("u", "other")) as server:
        url = server.base_url.replace("http://", "http://u:hunter2pass@") + "/" + upstream.path.name
        with pytest.raises(PermanentError) as info:
            cache.fetch(GitRemote(url, "main"))
        assert "hunter2pass" not in str(info.value)
        assert server.base_url in str(info.value)


def test_https_verifies_certificates(upstream: Upstream, cache: GitCache, tmp_path: Path) -> None:
    sha = upstream.commit({"a": "1"})
    ca, cert, key = make_tls_certs(tmp_path / "tls")
    with serve_http(upstream.path.parent, tls=(cert, key)) as server:
        remote = GitRemote(f"{server.base_url}/{upstream.path.name}", "main")
        with pytest.raises(SourceUnavailable, match="TLS certificate rejected"):
            cache.fetch(remote)  # signed by a CA nobody trusts
        old_file, old_dir = pygit2.settings.ssl_cert_file, pygit2.settings.ssl_cert_dir
        assert isinstance(old_file, str) and isinstance(old_dir, str)
        pygit2.settings.set_ssl_cert_locations(str(ca), None)  # process-wide: restored below
        try:
            assert cache.fetch(remote).sha == sha
        finally:
            pygit2.settings.set_ssl_cert_locations(old_file, old_dir)


def test_hung_server_times_out_as_source_unavailable(tmp_path: Path) -> None:
    cache = GitCache(tmp_path / "cache", fetch_timeout=10, connect_timeout=1, read_timeout=1)
    with serve_black_hole() as port:
        # libgit2's socket read timeout (1 s) ended it, not the 10 s fetch deadline, which
        # would say "no answer within 10s".
        with pytest.raises(SourceUnavailable, match="could not read from socket: timed out") as info:
            cache.fetch(GitRemote(f"http://127.0.0.1:{port}/repo.git", "main"))
        assert "no answer within" not in str(info.value)


def test_fetch_deadline_abandons_hung_fetch_without_blocking_other_urls(
    upstream: Upstream, tmp_path: Path
) -> None:
    sha = upstream.commit({"a": "1"})
    # libgit2's read timeout is long here, so only the per-fetch deadline can stop it.
    cache = GitCache(tmp_path / "cache", fetch_timeout=3.0, connect_timeout=30, read_timeout=30)
    with serve_black_hole() as port:
        hung = GitRemote(f"http://127.0.0.1:{port}/repo.git", "main")
        errors: list[Exception] = []

        def fetch_hung() -> None:
            try:
                cache.fetch(hung)
            except SourceUnavailable as exc:
                errors.append(exc)

        thread = threading.Thread(target=fetch_hung)
        thread.start()
        time.sleep(0.1)
        assert cache.fetch(GitRemote(upstream.url, "main")).sha == sha
        # Ordering: the other URL's fetch came back while the hung one still waits on its deadline.
        assert thread.is_alive() and errors == []
        thread.join(20)  # a hang guard, still short of libgit2's 30 s read timeout
        assert not thread.is_alive()
        assert len(errors) == 1 and "no answer within 3s" in str(errors[0])


# --- SSH -----------------------------------------------------------------------------------

needs_sshd = pytest.mark.skipif(
    not has_sshd(), reason="needs root, /usr/sbin/sshd and ssh-keygen (openssh-server)"
)


def test_pygit2_has_ssh_support() -> None:
    assert has_ssh_support()


@needs_sshd
def test_fetch_over_ssh_with_strict_known_hosts(upstream: Upstream, cache: GitCache, tmp_path: Path) -> None:
    sha = upstream.commit({"a": "1"})
    with serve_ssh(tmp_path / "ssh") as server:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(
            "# comment\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n" + server.known_hosts_line()
        )
        auth = SshKeyAuth(server.client_key, known_hosts=known_hosts)
        remote = GitRemote(server.url(upstream.path), "main", auth)
        assert cache.fetch(remote).sha == sha
        second = upstream.commit({"a": "2"})
        assert cache.fetch(remote).sha == second

        known_hosts.write_text(server.known_hosts_line(hashed=True))
        assert cache.fetch(remote).sha == second


@needs_sshd
def test_ssh_rejects_wrong_or_unknown_host_key(upstream: Upstream, cache: GitCache, tmp_path: Path) -> None:
    upstream.commit({"a": "1"})
    other = keygen(tmp_path / "other_host_key")
    other_pub = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    with serve_ssh(tmp_path / "ssh") as server:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{server.port} {other_pub}\n")
        remote = GitRemote(
            server.url(upstream.path), "main", SshKeyAuth(server.client_key, known_hosts=known_hosts)
        )
        with pytest.raises(HostKeyError, match="differs from the one in"):
            cache.fetch(remote)

        known_hosts.write_text(f"[127.0.0.1]:{server.port + 1} {server.host_key_pub}\n")
        with pytest.raises(HostKeyError, match="is not in"):
            cache.fetch(remote)

        skip = SshKeyAuth(server.client_key, known_hosts=known_hosts, insecure_skip_host_key_check=True)
        assert cache.fetch(GitRemote(server.url(upstream.path), "main", skip))


@needs_sshd
def test_ssh_rsa_keys_and_rejected_client_key(upstream: Upstream, cache: GitCache, tmp_path: Path) -> None:
    sha = upstream.commit({"a": "1"})
    with serve_ssh(tmp_path / "ssh", host_key_type="rsa", client_key_type="rsa") as server:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(server.known_hosts_line())
        remote = GitRemote(
            server.url(upstream.path), "main", SshKeyAuth(server.client_key, known_hosts=known_hosts)
        )
        assert cache.fetch(remote).sha == sha
        stranger = keygen(tmp_path / "stranger", "ecdsa")
        with pytest.raises(SourceAuthError):
            cache.fetch(
                GitRemote(server.url(upstream.path), "main", SshKeyAuth(stranger, known_hosts=known_hosts))
            )


@needs_sshd
def test_ssh_key_with_passphrase_from_file(upstream: Upstream, cache: GitCache, tmp_path: Path) -> None:
    sha = upstream.commit({"a": "1"})
    with serve_ssh(tmp_path / "ssh") as server:
        key = keygen(tmp_path / "locked", passphrase="pass-phrase-42")
        (tmp_path / "ssh" / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        Path(f"{key}.pub").unlink()  # the public half is derived from the private key
        (tmp_path / "passphrase").write_text("pass-phrase-42\n")
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(server.known_hosts_line())
        auth = SshKeyAuth(
            key, passphrase=SecretRef(file=tmp_path / "passphrase"), username="root", known_hosts=known_hosts
        )
        url = f"ssh://127.0.0.1:{server.port}{upstream.path}"  # no user in the URL: auth.username is used
        assert cache.fetch(GitRemote(url, "main", auth)).sha == sha


# --- pure helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://GitHub.com/Org/Repo.git", "https://github.com/Org/Repo.git"),
        ("https://x-access-token:tok@github.com:443/org/repo.git/", "https://github.com/org/repo.git"),
        ("ssh://git@github.com:22/org/repo.git", "ssh://github.com/org/repo.git"),
        ("ssh://git@host:2222/srv/repo", "ssh://host:2222/srv/repo"),
        ("git@github.com:org/repo.git", "scp://github.com/org/repo.git"),
        ("file:///srv/git/repo/", "file:///srv/git/repo"),
    ],
)
def test_normalise_url(url: str, key: str) -> None:
    assert normalise_url(url) == key


def test_display_url_strips_credentials() -> None:
    assert display_url("https://user:secret@example.org/r.git") == "https://example.org/r.git"
    assert display_url("ssh://git@example.org:2222/r.git") == "ssh://git@example.org:2222/r.git"
    assert display_url("git@example.org:r.git") == "git@example.org:r.git"


def test_known_hosts_patterns_hashes_and_revocation() -> None:
    key = b"\x00\x00\x00\x0bssh-ed25519" + b"k" * 36
    other = b"\x00\x00\x00\x0bssh-ed25519" + b"o" * 36
    import base64

    b64 = base64.b64encode(key).decode()
    entries = parse_known_hosts(
        f"*.example.org,!bad.example.org ssh-ed25519 {b64}\n"
        f"[git.local]:2222 ssh-ed25519 {b64}\n"
        f"@revoked * ssh-ed25519 {base64.b64encode(other).decode()}\n"
        "garbage line\n"
    )
    assert check_host_key(entries, "git.example.org", 22, key) is HostKeyVerdict.MATCH
    assert check_host_key(entries, "bad.example.org", 22, key) is HostKeyVerdict.UNKNOWN
    assert check_host_key(entries, "git.local", 2222, key) is HostKeyVerdict.MATCH
    assert check_host_key(entries, "git.local", 22, key) is HostKeyVerdict.UNKNOWN
    assert check_host_key(entries, "git.example.org", 22, other) is HostKeyVerdict.REVOKED
    third = b"\x00\x00\x00\x0bssh-ed25519" + b"t" * 36
    assert check_host_key(entries, "git.example.org", 22, third) is HostKeyVerdict.MISMATCH


def test_auth_reprs_never_show_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITDOCK_TOKEN", "ghp_verysecret")
    auth = TokenAuth(SecretRef(env="GITDOCK_TOKEN"))
    assert "ghp_verysecret" not in repr(auth) and "GITDOCK_TOKEN" in repr(auth)
    assert "ghp_verysecret" not in repr(GitRemote("https://example.org/r.git", "main", auth))
