"""Commit statuses and webhook notifications against a real HTTP server on 127.0.0.1.

Each forge's documented request is checked as the server received it: GitHub's
``POST /repos/{owner}/{repo}/statuses/{sha}`` with a Bearer token and its API version
headers, Gitea/Forgejo's ``/api/v1/repos/...`` with ``token``, GitLab's
``/api/v4/projects/{url-encoded path}/statuses/{sha}`` with ``PRIVATE-TOKEN`` and its own
state names. Then the delivery's contract: 5xx retried with backoff for a bounded number of
attempts, 4xx final, a hung receiver never blocks ``notify``, a full queue drops the oldest
and counts it, and no token or secret URL reaches a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from gitdock.agent.config import ConfigError, notify_targets, parse_config
from gitdock.agent.metrics import create_metrics
from gitdock.agent.notify import (
    EventKind,
    Forge,
    Notifier,
    SourceTargets,
    StatusTarget,
    WebhookFormat,
    WebhookTarget,
    event_of,
    redact_url,
    retry_delay,
)
from gitdock.agent.results import Reason, ReconcileResult
from gitdock.agent.state import Result, Trigger
from support.gitserver import free_port
from support.statusserver import StatusServer

SHA = "0123456789abcdef0123456789abcdef01234567"
GOOD = "fedcba9876543210fedcba9876543210fedcba98"
TOKEN = "ghp_s3cr3t-token-value"


def healthy(sha: str = SHA) -> ReconcileResult:
    message = f"applied revision main@sha1:{sha[:12]}: 1 operation(s) in 0.4s; healthy in 3.0s"
    return ReconcileResult("app", Trigger.WEBHOOK, Result.SUCCESS, Reason.APPLIED.value, message, sha)


def rolled_back(sha: str = SHA, good: str = GOOD) -> ReconcileResult:
    message = f"rolled back from {sha[:12]} to {good[:12]}: service web: exited 1"
    return ReconcileResult(
        "app", Trigger.SCHEDULE, Result.FAILURE, Reason.ROLLED_BACK.value, message, sha, live=good
    )


def status(server: StatusServer, forge: Forge, repo: str = "octo/app", token: str = TOKEN) -> StatusTarget:
    return StatusTarget(forge, server.url, repo, lambda: token, "gitdock/app", "http://agent:9000/app")


def webhook(url: str, fmt: WebhookFormat = WebhookFormat.JSON) -> WebhookTarget:
    return WebhookTarget(lambda: url, fmt, f"webhook {redact_url(url, keep_path=False)}")


@pytest.fixture
def server() -> Iterator[StatusServer]:
    with StatusServer() as s:
        yield s


@pytest.fixture
def make_notifier() -> Iterator[Callable[..., Notifier]]:
    made: list[Notifier] = []

    def make(*statuses: StatusTarget, hooks: tuple[WebhookTarget, ...] = (), **options: object) -> Notifier:
        targets = SourceTargets(statuses, hooks, "app-project", "main", "https://git.example.com/octo/app")
        settings: dict[str, object] = {"backoff": 0.01, "max_backoff": 0.05, "timeout": 5.0} | options
        notifier = Notifier({"app": targets}, **settings)  # type: ignore[arg-type]
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close(timeout=5)


def settled(notifier: Notifier, done: int, timeout: float = 30.0) -> dict[str, int]:
    """Wait until ``done`` deliveries were sent or given up; the counts then."""
    deadline = time.monotonic() + timeout
    while notifier.counts["sent"] + notifier.counts["failed"] < done:
        assert time.monotonic() < deadline, f"deliveries not settled: {notifier.counts}"
        time.sleep(0.01)
    return dict(notifier.counts)


# --- each forge's documented request ---------------------------------------------------------


def test_github_status_is_a_bearer_authenticated_post_to_repos_statuses_sha(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(status(server, Forge.GITHUB))
    notifier.notify_deploying("app", SHA, "webhook")
    notifier.notify(healthy())
    pending, success = server.wait_for(2, f"/repos/octo/app/statuses/{SHA}")
    assert pending.method == "POST"
    assert pending.headers["authorization"] == f"Bearer {TOKEN}"
    assert pending.headers["accept"] == "application/vnd.github+json"
    assert pending.headers["x-github-api-version"] == "2022-11-28"
    assert pending.headers["content-type"] == "application/json"
    assert pending.json == {
        "state": "pending",
        "context": "gitdock/app",
        "description": f"deploying revision {SHA[:12]}",
        "target_url": "http://agent:9000/app",
    }
    assert success.json["state"] == "success"
    assert success.json["description"].startswith("healthy: applied revision main@sha1:0123456789ab")
    assert settled(notifier, 2) == {"sent": 2, "failed": 0, "dropped": 0}


def test_gitea_status_uses_a_token_header_and_api_v1(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(status(server, Forge.GITEA))
    notifier.notify(rolled_back())
    (request,) = server.wait_for(1, f"/api/v1/repos/octo/app/statuses/{SHA}")
    assert request.headers["authorization"] == f"token {TOKEN}"
    assert request.json == {
        "state": "failure",
        "context": "gitdock/app",
        "description": f"rolled back from {SHA[:12]} to {GOOD[:12]}: service web: exited 1",
        "target_url": "http://agent:9000/app",
    }


def test_gitlab_status_names_the_project_by_its_url_encoded_path_and_uses_gitlab_states(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(status(server, Forge.GITLAB, repo="group/sub/app"))
    notifier.notify_deploying("app", SHA)
    notifier.notify(rolled_back())
    running, failed = server.wait_for(2, f"/api/v4/projects/group%2Fsub%2Fapp/statuses/{SHA}")
    assert running.headers["private-token"] == TOKEN
    assert "authorization" not in running.headers
    assert running.json == {
        "state": "running",
        "name": "gitdock/app",
        "description": f"deploying revision {SHA[:12]}",
        "target_url": "http://agent:9000/app",
    }
    assert failed.json["state"] == "failed"


def test_an_error_is_failed_on_gitlab_and_error_on_github(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    error = ReconcileResult(
        "app", Trigger.SCHEDULE, Result.ERROR, "DockerUnavailable", "cannot reach Docker", SHA
    )
    notifier = make_notifier(status(server, Forge.GITHUB), status(server, Forge.GITLAB, repo="g/app"))
    notifier.notify(error)
    (github,) = server.wait_for(1, f"/repos/octo/app/statuses/{SHA}")
    (gitlab,) = server.wait_for(1, f"/api/v4/projects/g%2Fapp/statuses/{SHA}")
    assert (github.json["state"], gitlab.json["state"]) == ("error", "failed")


def test_a_description_is_cut_to_140_characters(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    long = dataclass_replace_message(rolled_back(), "service web: unhealthy: " + "x" * 500)
    make_notifier(status(server, Forge.GITHUB)).notify(long)
    (request,) = server.wait_for(1)
    description = request.json["description"]
    assert len(description) == 140 and description.endswith("…"), description


def dataclass_replace_message(result: ReconcileResult, message: str) -> ReconcileResult:
    import dataclasses

    return dataclasses.replace(result, message=message)


def test_a_json_webhook_carries_a_slack_text_and_gitdocks_fields(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(hooks=(webhook(server.url + "/hooks/gitdock"),))
    notifier.notify(rolled_back())
    (request,) = server.wait_for(1, "/hooks/gitdock")
    assert request.headers["content-type"] == "application/json"
    body = request.json
    at = body.pop("at")
    assert datetime.fromisoformat(at.replace("Z", "+00:00")) <= datetime.now(UTC)
    assert body == {
        "text": f"gitdock: app rolled back main@{SHA[:12]}: rolled back from {SHA[:12]} to {GOOD[:12]}: "
        "service web: exited 1",
        "source": "app",
        "project": "app-project",
        "repository": "https://git.example.com/octo/app",
        "ref": "main",
        "event": "rolled_back",
        "state": "failure",
        "reason": "RolledBack",
        "message": f"rolled back from {SHA[:12]} to {GOOD[:12]}: service web: exited 1",
        "revision": SHA,
        "live": GOOD,
        "trigger": "schedule",
    }


def test_a_slack_webhook_gets_only_text(server: StatusServer, make_notifier: Callable[..., Notifier]) -> None:
    notifier = make_notifier(hooks=(webhook(server.url + "/services/T0/B0/XXXX", WebhookFormat.SLACK),))
    notifier.notify(healthy())
    (request,) = server.wait_for(1, "/services/T0/B0/XXXX")
    assert request.json == {
        "text": f"gitdock: app deployed main@{SHA[:12]}: applied revision main@sha1:{SHA[:12]}: "
        "1 operation(s) in 0.4s; healthy in 3.0s"
    }


# --- what is said, and when not again -------------------------------------------------------


def test_a_skip_says_nothing_and_drift_goes_to_webhooks_only(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    skip = ReconcileResult("app", Trigger.SCHEDULE, Result.SKIP, Reason.KNOWN_BAD.value, "failed before", SHA)
    drift = ReconcileResult("app", Trigger.DRIFT, Result.SUCCESS, Reason.DRIFT_HEALED.value, "healed 1", SHA)
    assert event_of(skip) is None
    assert event_of(drift) is not None and event_of(drift).kind is EventKind.DRIFT  # type: ignore[union-attr]
    notifier = make_notifier(status(server, Forge.GITHUB), hooks=(webhook(server.url + "/hook"),))
    notifier.notify(skip)
    notifier.notify(drift)
    (request,) = server.wait_for(1)
    assert request.path == "/hook" and request.json["event"] == "drift"
    assert settled(notifier, 1)["sent"] == 1
    assert [r.path for r in server.received()] == ["/hook"]


def test_the_same_outcome_is_not_posted_twice(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    notifier = make_notifier(status(server, Forge.GITHUB), hooks=(webhook(server.url + "/hook"),))
    notifier.notify(healthy())
    notifier.notify(healthy())  # a manual reconcile of the same commit: nothing new to say
    notifier.notify(healthy(GOOD))
    settled(notifier, 4)
    paths = sorted(r.path for r in server.received())
    assert paths == sorted(
        ["/hook", "/hook", f"/repos/octo/app/statuses/{SHA}", f"/repos/octo/app/statuses/{GOOD}"]
    )


def test_a_source_without_targets_starts_no_thread() -> None:
    notifier = Notifier({"app": SourceTargets()})
    notifier.notify(healthy())
    assert notifier._thread is None
    notifier.close()


# --- retries, bounds, never blocking ---------------------------------------------------------


def test_a_5xx_is_retried_with_backoff_until_delivered(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    path = f"/repos/octo/app/statuses/{SHA}"
    server.answer(path, 502, 503)
    notifier = make_notifier(status(server, Forge.GITHUB))
    notifier.notify(healthy())
    requests = server.wait_for(3, path)
    assert [r.json for r in requests[1:]] == [requests[0].json] * 2
    assert settled(notifier, 1) == {"sent": 1, "failed": 0, "dropped": 0}


def test_attempts_are_bounded_and_a_4xx_is_not_retried(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    down, refused = f"/repos/octo/app/statuses/{SHA}", f"/api/v1/repos/octo/app/statuses/{SHA}"
    server.answer(down, *[500] * 10)
    server.answer(refused, 401)
    notifier = make_notifier(status(server, Forge.GITHUB), status(server, Forge.GITEA), attempts=3)
    notifier.notify(healthy())
    assert settled(notifier, 2) == {"sent": 0, "failed": 2, "dropped": 0}
    assert len(server.received(down)) == 3
    assert len(server.received(refused)) == 1


def test_an_unreachable_receiver_is_retried_then_given_up(make_notifier: Callable[..., Notifier]) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    notifier = make_notifier(hooks=(webhook(url),), attempts=2)
    notifier.notify(healthy())
    assert settled(notifier, 1) == {"sent": 0, "failed": 1, "dropped": 0}


def test_retry_delay_doubles_up_to_the_cap_and_honours_retry_after() -> None:
    assert [retry_delay(n, 1.0, 10.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 8.0, 10.0]
    assert retry_delay(1, 1.0, 60.0, "7") == 7.0
    assert retry_delay(1, 1.0, 5.0, "120") == 5.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 20.0 < retry_delay(1, 1.0, 60.0, later) <= 30.0
    assert retry_delay(2, 1.0, 60.0, "soon") == 2.0  # not a Retry-After value: the backoff


def test_notify_returns_while_the_receiver_hangs(
    server: StatusServer, make_notifier: Callable[..., Notifier]
) -> None:
    server.hang()
    notifier = make_notifier(status(server, Forge.GITHUB), timeout=30.0)
    notifier.notify(healthy())
    server.wait_for(1)  # the worker's request is held by the server now
    for n in range(20):  # each returns at once: the reconcile only queues
        notifier.notify(healthy(f"{n:040x}"))
    assert notifier.counts == {"sent": 0, "failed": 0, "dropped": 0}
    assert notifier.pending() == 20
    server.release()
    assert settled(notifier, 21) == {"sent": 21, "failed": 0, "dropped": 0}


def test_a_full_queue_drops_the_oldest_counts_it_and_warns_once(
    server: StatusServer, make_notifier: Callable[..., Notifier], caplog: pytest.LogCaptureFixture
) -> None:
    metrics, provider = create_metrics()
    server.hang()
    notifier = make_notifier(status(server, Forge.GITHUB), queue_size=5, timeout=30.0, metrics=metrics)
    notifier.notify(healthy())
    server.wait_for(1)
    shas = [f"{n:040x}" for n in range(8)]
    for sha in shas:
        notifier.notify(healthy(sha))
    assert notifier.counts["dropped"] == 3
    assert [r.getMessage() for r in caplog.records if "queue full" in r.getMessage()] == [
        "notification queue full (5): dropping the oldest, first healthy to "
        f"github status ({server.url} octo/app) of source app"
    ]
    server.release()
    settled(notifier, 6)
    sent = [r.path.rsplit("/", 1)[1] for r in server.received()[1:]]
    assert sent == shas[3:]  # the oldest three were dropped
    text = metrics.render_prometheus()
    assert 'gitdock_notifications_total{result="dropped"} 3.0' in text
    assert 'gitdock_notifications_total{result="sent"} 6.0' in text
    provider.shutdown()


# --- secrets -------------------------------------------------------------------------------


def test_no_token_or_secret_url_reaches_the_logs(
    server: StatusServer,
    make_notifier: Callable[..., Notifier],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook_path = "/services/T0/B0/hook-s3cr3t-path"
    with_password = server.url.replace("//", "//user:pa55word@") + "/basic?key=qu3ry-s3cr3t"
    monkeypatch.setenv("TEST_GH_TOKEN", TOKEN)
    monkeypatch.setenv("TEST_HOOK_URL", server.url + hook_path)
    config = parse_config(
        "sources:\n"
        "  - name: app\n"
        "    url: https://git.example.com/octo/app.git\n"
        "    notify:\n"
        f"      github: {{url: {server.url}, repo: octo/app, token: {{env: TEST_GH_TOKEN}}}}\n"
        f"      webhooks: [{{url: {{env: TEST_HOOK_URL}}}}, {{url: '{with_password}'}}]\n",
        "agent.yaml",
    )
    assert TOKEN not in repr(config) and "pa55word" not in repr(notify_targets(config))
    targets = notify_targets(config)["app"]
    server.answer(f"/repos/octo/app/statuses/{SHA}", 401)
    server.answer(hook_path, 500, 500)
    server.answer("/basic?key=qu3ry-s3cr3t", 403)
    caplog.set_level(logging.DEBUG, logger="gitdock")
    notifier = make_notifier(*targets.statuses, hooks=targets.webhooks, attempts=2)
    notifier.notify(healthy())
    assert settled(notifier, 3) == {"sent": 0, "failed": 3, "dropped": 0}
    assert server.received("/basic?key=qu3ry-s3cr3t")[0].headers["authorization"].startswith("Basic ")
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (TOKEN, "hook-s3cr3t-path", "pa55word", "qu3ry-s3cr3t", "/services/T0", "/basic"):
        assert secret not in text, secret
    assert f"github status ({server.url} octo/app): HTTP 401 Unauthorized: answer 401" in text
    assert "webhook (URL from $TEST_HOOK_URL): HTTP 500" in text
    assert f"webhook {server.url}/…: HTTP 403" in text


def test_an_unreadable_token_fails_the_delivery_naming_where_it_was_looked_for(
    server: StatusServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    make_notifier: Callable[..., Notifier],
) -> None:
    config = parse_config(
        "sources:\n"
        "  - name: app\n"
        "    url: https://git.example.com/octo/app.git\n"
        "    notify:\n"
        f"      gitea: {{url: {server.url}, repo: octo/app, token: {{file: missing-token}}}}\n",
        str(tmp_path / "agent.yaml"),
    )
    targets = notify_targets(config)
    notifier = make_notifier(*targets["app"].statuses)
    notifier.notify(healthy())
    assert settled(notifier, 1)["failed"] == 1
    assert server.received() == []
    assert f"secret file {tmp_path / 'missing-token'}" in caplog.text


# --- configuration -------------------------------------------------------------------------


def test_the_config_builds_each_forges_target_with_its_default_api_url(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = parse_config(
        "sources:\n"
        "  - name: app\n"
        "    url: https://git.example.com/octo/app.git\n"
        "    notify:\n"
        "      github: {repo: octo/app, token: {file: token}}\n"
        "      gitlab: {repo: group/app, token: {env: GL_TOKEN}}\n"
        "      gitea: {url: 'https://codeberg.org', repo: octo/app, token: {file: token}}\n"
        "      context: deploy/prod\n"
        "      webhooks:\n"
        "        - {url: 'https://hooks.slack.com/services/T/B/X', format: slack}\n"
        "        - url: {env: HOOK_URL}\n",
        str(tmp_path / "agent.yaml"),
    )
    targets = notify_targets(config)["app"]
    assert [(t.forge, t.api_url, t.repo, t.context) for t in targets.statuses] == [
        (Forge.GITHUB, "https://api.github.com", "octo/app", "deploy/prod"),
        (Forge.GITEA, "https://codeberg.org", "octo/app", "deploy/prod"),
        (Forge.GITLAB, "https://gitlab.com", "group/app", "deploy/prod"),
    ]
    assert targets.statuses[0].token() == TOKEN
    assert [(h.format, h.label) for h in targets.webhooks] == [
        (WebhookFormat.SLACK, "webhook https://hooks.slack.com/…"),
        (WebhookFormat.JSON, "webhook (URL from $HOOK_URL)"),
    ]
    assert TOKEN not in repr(config) and "services/T/B/X" not in repr(targets)


@pytest.mark.parametrize(
    ("notify", "expected", "hidden"),
    [
        ("github: {repo: octo/app, token: ghp_inline}", "not written inline", "ghp_inline"),
        ("gitea: {repo: octo/app, token: {env: T}}", "gitea needs `url`", None),
        ("github: {repo: app, token: {env: T}}", "'app' is not OWNER/NAME", None),
        (
            "gitlab: {url: 'https://me:hunter2@gitlab.example.com', repo: g/app, token: {env: T}}",
            "credentials in the URL are not allowed",
            "hunter2",
        ),
        ("webhooks: [{url: 'ftp://hooks.example.com/x'}]", "not an http:// or https:// URL", None),
        ("bitbucket: {repo: octo/app}", "bitbucket", None),
    ],
    ids=["inline-token", "gitea-url", "repo", "url-credentials", "scheme", "unknown-forge"],
)
def test_a_bad_notify_config_is_one_clear_line(notify: str, expected: str, hidden: str | None) -> None:
    source = "  - name: app\n    url: https://git.example.com/octo/app.git\n"
    text = f"sources:\n{source}    notify:\n      {notify}\n"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "agent.yaml")
    message = str(caught.value)
    assert "agent.yaml:" in message and "notify" in message and expected in message, message
    if hidden is not None:
        assert hidden not in message
