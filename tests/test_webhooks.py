"""Webhook signatures, replay keys, push payload parsing, repository matching and the debouncer."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest

from gitdock.agent.webhooks import (
    MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    Debouncer,
    DeliveryLog,
    IgnoredEvent,
    InvalidWebhook,
    Provider,
    PushEvent,
    delivery_id,
    json_depth_exceeds,
    matches,
    parse_push,
    repository_identity,
    same_repository,
    verify,
    verify_generic,
    verify_gitea,
    verify_github,
    verify_gitlab,
)

SECRET = b"It's a Secret to Everybody"
SHA = "1" * 40

# The test vector from GitHub's "Validating webhook deliveries" documentation.
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def sign(body: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, body, hashlib.sha256).hexdigest()


# --- signatures ----------------------------------------------------------------------------


def test_github_signature_matches_documented_vector() -> None:
    assert verify_github(GITHUB_BODY, GITHUB_SIGNATURE, SECRET)


def test_github_signature_rejects_tampering_wrong_key_and_missing_header() -> None:
    tampered = GITHUB_BODY + b" "
    assert tampered != GITHUB_BODY
    assert not verify_github(tampered, GITHUB_SIGNATURE, SECRET)
    assert not verify_github(GITHUB_BODY, GITHUB_SIGNATURE, b"another secret")
    assert not verify_github(GITHUB_BODY, None, SECRET)
    assert not verify_github(GITHUB_BODY, GITHUB_SIGNATURE.removeprefix("sha256="), SECRET)  # prefix required
    assert not verify_github(GITHUB_BODY, GITHUB_SIGNATURE, b"")  # no secret configured: never valid


def test_gitea_signature_is_bare_hex() -> None:
    body = b'{"ref":"refs/heads/main"}'
    assert verify_gitea(body, sign(body), SECRET)
    assert not verify_gitea(body, "sha256=" + sign(body), SECRET)
    assert not verify_gitea(body + b"x", sign(body), SECRET)
    assert not verify_gitea(body, None, SECRET)


def test_gitlab_token_must_equal() -> None:
    assert verify_gitlab(b"{}", SECRET.decode(), SECRET)
    assert not verify_gitlab(b"{}", SECRET.decode() + "x", SECRET)
    assert not verify_gitlab(b"{}", None, SECRET)


def test_generic_signature_prefix_optional() -> None:
    body = b"{}"
    assert verify_generic(body, sign(body), SECRET)
    assert verify_generic(body, "sha256=" + sign(body), SECRET)
    assert verify_generic(body, "SHA256=" + sign(body).upper(), SECRET)
    assert not verify_generic(body, "sha256=" + sign(b"[]"), SECRET)


def test_verify_dispatches_on_provider_and_custom_header() -> None:
    body = b"{}"
    assert verify(Provider.GITHUB, {"x-hub-signature-256": "sha256=" + sign(body)}, body, SECRET)
    assert verify(Provider.GITEA, {"X-Forgejo-Signature": sign(body)}, body, SECRET)
    assert verify(Provider.GITLAB, {"X-Gitlab-Token": SECRET.decode()}, body, SECRET)
    assert verify(Provider.GENERIC, {"X-Signature": sign(body)}, body, SECRET, header_name="X-Signature")
    assert not verify(Provider.GENERIC, {"X-Signature": sign(body)}, body, SECRET)
    assert not verify(Provider.GITHUB, {"X-Gitea-Signature": sign(body)}, body, SECRET)


def test_max_body_is_one_mebibyte() -> None:
    assert MAX_BODY_BYTES == 1 << 20


# --- payloads ------------------------------------------------------------------------------

GITHUB_PUSH = {
    "ref": "refs/heads/main",
    "before": "0" * 40,
    "after": SHA,
    "repository": {
        "full_name": "org/app",
        "html_url": "https://github.com/org/app",
        "url": "https://api.github.com/repos/org/app",
        "clone_url": "https://github.com/org/app.git",
        "ssh_url": "git@github.com:org/app.git",
        "git_url": "git://github.com/org/app.git",
    },
}


def test_parse_github_push() -> None:
    event = parse_push(Provider.GITHUB, {"X-GitHub-Event": "push"}, json.dumps(GITHUB_PUSH).encode())
    assert isinstance(event, PushEvent)
    assert (event.ref, event.after_sha, event.branch, event.tag) == ("refs/heads/main", SHA, "main", None)
    assert "git@github.com:org/app.git" in event.repo_urls
    assert "https://api.github.com/repos/org/app" not in event.repo_urls
    assert matches(event, "ssh://git@github.com/org/app")


def test_github_ping_and_other_events_are_ignored() -> None:
    ping = parse_push(Provider.GITHUB, {"X-GitHub-Event": "ping"}, b'{"zen": "Keep it logically awesome."}')
    assert isinstance(ping, IgnoredEvent) and ping.event == "ping"
    assert isinstance(parse_push(Provider.GITHUB, {}, b"{}"), IgnoredEvent)


def test_parse_gitea_push_and_tag() -> None:
    body = {
        "ref": "refs/tags/v1.2",
        "after": SHA,
        "repository": {
            "clone_url": "https://git.example.org/org/app.git",
            "ssh_url": "git@git.example.org:org/app.git",
        },
    }
    event = parse_push(Provider.GITEA, {"X-Forgejo-Event": "push"}, json.dumps(body).encode())
    assert isinstance(event, PushEvent) and event.tag == "v1.2"
    assert matches(event, "https://GIT.example.org/org/app")


def test_parse_gitlab_push_and_non_push() -> None:
    body = {
        "object_kind": "push",
        "ref": "refs/heads/main",
        "after": SHA,
        "checkout_sha": SHA,
        "project": {
            "git_http_url": "https://gitlab.example.org/group/sub/app.git",
            "git_ssh_url": "git@gitlab.example.org:group/sub/app.git",
            "web_url": "https://gitlab.example.org/group/sub/app",
        },
        "repository": {"url": "git@gitlab.example.org:group/sub/app.git"},
    }
    event = parse_push(Provider.GITLAB, {"X-Gitlab-Event": "Push Hook"}, json.dumps(body).encode())
    assert isinstance(event, PushEvent)
    assert matches(event, "ssh://git@gitlab.example.org:2222/group/sub/app.git")
    issue = parse_push(Provider.GITLAB, {"X-Gitlab-Event": "Issue Hook"}, b"{}")
    assert isinstance(issue, IgnoredEvent)


def test_branch_deletion_is_a_push_with_zero_sha() -> None:
    body = dict(GITHUB_PUSH, after="0" * 40)
    event = parse_push(Provider.GITHUB, {"X-GitHub-Event": "push"}, json.dumps(body).encode())
    assert isinstance(event, PushEvent) and event.is_deletion


def test_generic_payloads() -> None:
    empty = parse_push(Provider.GENERIC, {}, b"")
    assert empty == PushEvent("", "", frozenset())
    event = parse_push(
        Provider.GENERIC, {}, json.dumps({"ref": "main", "sha": SHA, "repo_url": "https://h/x.git"}).encode()
    )
    assert isinstance(event, PushEvent) and event.repo_urls == {"https://h/x.git"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"ref": 1, "after": "x"}',
        b'{"after": "' + SHA.encode() + b'"}',
        b'{"ref": "r", "after": "zz"}',
    ],
)
def test_malformed_pushes_raise(body: bytes) -> None:
    with pytest.raises(InvalidWebhook):
        parse_push(Provider.GITHUB, {"X-GitHub-Event": "push"}, body)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("https://github.com/Org/App.git", "git@github.com:org/app", True),
        ("ssh://git@github.com:22/org/app.git/", "https://github.com/org/app", True),
        ("https://token@github.com/org/app", "https://github.com/org/app.git", True),
        ("https://github.com/org/app", "https://github.com/org/app2", False),
        ("https://github.com/org/app", "https://gitlab.com/org/app", False),
    ],
)
def test_same_repository(a: str, b: str, same: bool) -> None:
    assert same_repository(a, b) is same


def test_repository_identity_form() -> None:
    assert repository_identity("git@github.com:org/app.git") == "github.com/org/app"


# --- debouncer -----------------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.event = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, key: str, value: int) -> None:
        with self.lock:
            self.calls.append((key, value))
        self.event.set()


def test_debouncer_coalesces_a_burst_into_one_call_with_newest_value() -> None:
    rec = Recorder()
    # The window is long enough that a preempted loop (a loaded CI machine) still lands all 20
    # triggers inside it; a short one would split the burst into two calls.
    deb: Debouncer[str, int] = Debouncer(0.5, rec)
    for i in range(20):
        deb.trigger("src", i)
    assert rec.event.wait(30)
    time.sleep(0.6)  # nothing else may fire after the window
    assert rec.calls == [("src", 19)]
    assert deb.pending() == set()


def test_debouncer_keys_are_independent() -> None:
    rec = Recorder()
    deb: Debouncer[str, int] = Debouncer(0.03, rec)
    deb.trigger("a", 1)
    deb.trigger("b", 2)
    deadline = time.monotonic() + 30
    while len(rec.calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(rec.calls) == [("a", 1), ("b", 2)]


def test_debouncer_restarts_window_on_each_trigger() -> None:
    rec = Recorder()
    # Margins of a second either side: a sleep that overruns on a loaded machine must not
    # let the first window fire before the second trigger, nor the second before the check.
    deb: Debouncer[str, int] = Debouncer(3.0, rec)
    deb.trigger("a", 1)
    time.sleep(1.0)
    deb.trigger("a", 2)  # restarts the 3 s window
    time.sleep(2.5)  # 3.5 s after the first trigger: the first window would have fired by now
    assert rec.calls == []
    assert rec.event.wait(30)
    assert rec.calls == [("a", 2)]


def test_debouncer_max_delay_bounds_a_continuous_burst() -> None:
    rec = Recorder()
    # A window of an hour, far past the 30 s hang guard, and restarted every 0.02 s: the only
    # way the key can fire while the burst goes on is max_delay.
    deb: Debouncer[str, int] = Debouncer(3600.0, rec, max_delay=0.15)
    deadline = time.monotonic() + 30  # a hang guard, not a measure of speed
    i = 0
    while not rec.event.is_set() and time.monotonic() < deadline:
        deb.trigger("a", i)
        i += 1
        time.sleep(0.02)
    assert rec.event.is_set()
    with rec.lock:
        (key, value), *more = rec.calls
    assert (key, more) == ("a", [])  # one call for the burst so far
    assert 0 <= value < i  # a value of this burst, fired while it was still being triggered
    deb.close()


def test_debouncer_cancel_and_close() -> None:
    rec = Recorder()
    deb: Debouncer[str, int] = Debouncer(0.5, rec)  # long enough that "a" is still pending at cancel
    deb.trigger("a", 1)
    assert deb.cancel("a") is True
    assert deb.cancel("a") is False
    deb.trigger("b", 1)
    deb.close()
    deb.trigger("c", 1)  # ignored after close
    time.sleep(1.0)  # past every window
    assert rec.calls == []


def test_debouncer_survives_callback_errors(caplog: pytest.LogCaptureFixture) -> None:
    done = threading.Event()

    def boom(key: str, value: int) -> None:
        done.set()
        raise RuntimeError("reconcile exploded")

    deb: Debouncer[str, int] = Debouncer(0.01, boom)
    deb.trigger("a", 1)
    assert done.wait(30)
    # The log line follows the callback on the timer thread: wait for it, not a fixed time.
    deadline = time.monotonic() + 30
    while "debounced callback" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "debounced callback" in caplog.text


# --- replays and nesting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "header", "key"),
    [
        (Provider.GITHUB, "X-GitHub-Delivery", "github:72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (Provider.GITEA, "X-Gitea-Delivery", "gitea:72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (Provider.GITEA, "X-Forgejo-Delivery", "gitea:72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (Provider.GITLAB, "X-Gitlab-Event-UUID", "gitlab:72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (Provider.GITLAB, "Idempotency-Key", "gitlab:72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (Provider.GENERIC, "X-Gitdock-Delivery", "generic:72d3162e-cc78-11e3-81ab-4c9367dc0958"),
    ],
)
def test_delivery_id_is_the_forges_delivery_header(provider: Provider, header: str, key: str) -> None:
    headers = {header.lower(): "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    assert delivery_id(provider, headers, b"{}") == key


def test_delivery_id_without_a_header() -> None:
    body = b'{"ref": "refs/heads/main"}'
    assert delivery_id(Provider.GITHUB, {}, body) is None  # no key: the delivery always counts
    digest = hashlib.sha256(body).hexdigest()
    assert delivery_id(Provider.GENERIC, {}, body) == f"generic:sha256:{digest}"
    assert delivery_id(Provider.GENERIC, {}, b"  ") is None  # an empty poke is never a replay
    assert delivery_id(Provider.GENERIC, {"X-Run": "42"}, body, "X-Run") == "generic:42"


def test_delivery_id_keeps_a_long_or_unprintable_id_as_its_digest() -> None:
    for value in ("x" * 5000, "a\x00b"):
        key = delivery_id(Provider.GITHUB, {"X-GitHub-Delivery": value}, b"")
        assert key == "github:sha256:" + hashlib.sha256(value.encode()).hexdigest()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delivery_log_counts_a_key_once_within_its_ttl() -> None:
    clock = Clock()
    log = DeliveryLog(size=10, ttl=60, clock=clock)
    assert log.first("github:a") is True
    clock.now += 59
    assert log.first("github:a") is False
    assert log.first("github:b") is True
    clock.now += 2  # a was recorded 61 s ago
    assert log.first("github:a") is True


def test_delivery_log_forgets_the_oldest_beyond_its_size() -> None:
    log = DeliveryLog(size=3, ttl=60, clock=Clock())
    for key in "abcd":
        assert log.first(key) is True
    assert [k for k, _ in log.entries()] == ["b", "c", "d"]
    assert log.first("a") is True and log.first("d") is False


def test_delivery_log_restores_what_a_previous_process_saw_unless_expired() -> None:
    clock = Clock()
    old = DeliveryLog(ttl=60, clock=clock)
    old.first("kept")
    clock.now += 10
    new = DeliveryLog(ttl=60, clock=clock)
    new.restore([*old.entries(), ("expired", clock.now - 61)])
    assert new.first("kept") is False
    assert new.first("expired") is True


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    assert json_depth_exceeds(b"[[[]]]", 2) is True
    assert json_depth_exceeds(b"[[[]]]", 3) is False
    assert json_depth_exceeds(b'{"a": "[[[[[[", "b": "\\"[[[["}', 1) is False
    assert json_depth_exceeds(b'{"a": {"b": [1, {"c": "}}}]]"}]}}', 4) is False


def test_push_nested_too_deeply_is_refused_not_a_recursion_error() -> None:
    for depth in (MAX_JSON_DEPTH + 1, 100_000):
        body = b'{"ref": "refs/heads/main", "x": ' + b"[" * depth + b"]" * depth + b"}"
        with pytest.raises(InvalidWebhook, match="JSON nested too deeply"):
            parse_push(Provider.GENERIC, {}, body)
    body = b'{"ref": "refs/heads/main", "x": ' + b"[" * 60 + b"]" * 60 + b"}"
    assert isinstance(parse_push(Provider.GENERIC, {}, body), PushEvent)
