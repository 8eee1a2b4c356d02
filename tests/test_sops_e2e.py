"""SOPS-encrypted ``.env``, env_file and secret deploy against the real dockerd.

The decrypted value must be in the container and nowhere else: not in the state directory
(load cache, applied record, agent database), not in the CLI's output or plan, not in a span.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from gitdock.agent.config import parse_config
from gitdock.agent.git import GitCache
from gitdock.agent.reconcile import Reconciler
from gitdock.agent.state import Result, StateStore, Trigger
from gitdock.runtime.docker import DockerClient
from support.docker import TEST_IMAGE, docker_cli
from support.gitserver import Upstream
from support.sops import age_keygen, encrypt_document
from support.spans import capture_spans

pytestmark = pytest.mark.docker

SECRET = "s3cr3t-Pa55-e2e-7c1d"
TOKEN = "tok-a91f-e2e-secret"
LOOP = "trap 'exit 0' TERM; while :; do sleep 1; done"
COMPOSE = f"""\
services:
  web:
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{LOOP}"]
    env_file: web.env
    environment:
      DB_PASSWORD: ${{DB_PASSWORD}}
      GREETING: hello
    secrets: [db_password]
secrets:
  db_password:
    file: ./db_password.txt
"""


@pytest.fixture(scope="module")
def age_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An age key file (0600, as sops expects it) and its recipient."""
    identity, recipient = age_keygen()
    key_file = tmp_path_factory.mktemp("age") / "keys.txt"
    key_file.write_text(identity)
    key_file.chmod(0o600)
    return key_file, recipient


def sops_files(recipient: str) -> dict[str, bytes]:
    """The project: compose.yaml in the clear; .env, web.env and the secret SOPS-encrypted."""
    files = {
        ".env": encrypt_document({"DB_PASSWORD": SECRET}, "dotenv", recipient),
        "web.env": encrypt_document({"API_TOKEN": TOKEN}, "dotenv", recipient),
        "db_password.txt": encrypt_document({"data": SECRET}, "binary", recipient),
        "compose.yaml": COMPOSE.encode(),
    }
    assert not any(SECRET.encode() in v or TOKEN.encode() in v for v in files.values())
    return files


def gitdock(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitdock.agent.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=180,
        check=False,
    )


def container_env(container: str, name: str) -> str:
    """The variable as the container's own shell sees it."""
    return docker_cli("exec", container, "sh", "-c", f'printf %s "${name}"')


def assert_nowhere_under(root: Path, *values: str) -> int:
    """No file under ``root`` holds any of ``values``; returns how many files were checked."""
    files = [p for p in root.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        for value in values:
            assert value.encode() not in data, f"{value!r} is in {path}"
    return len(files)


def test_gitdock_apply_deploys_sops_env_and_secret_and_writes_no_plaintext(
    tmp_path: Path, project_name: str, age_key: tuple[Path, str]
) -> None:
    key_file, recipient = age_key
    app = tmp_path / "app"
    app.mkdir()
    for name, data in sops_files(recipient).items():
        (app / name).write_bytes(data)
    state = tmp_path / "state"
    by_env = {"SOPS_AGE_KEY_FILE": str(key_file), "GITDOCK_STATE_DIR": str(state)}
    by_option = ["--sops-age-key-file", str(key_file)]
    compose = str(app / "compose.yaml")

    outputs = []
    for command, option in (("plan", by_option), ("apply", []), ("apply", []), ("drift", [])):
        env = by_env if not option else {"GITDOCK_STATE_DIR": str(state), "SOPS_AGE_KEY_FILE": "/nonexistent"}
        done = gitdock(command, "-f", compose, "-p", project_name, *option, env=env)
        assert done.returncode == 0, f"gitdock {command}: {done.stdout}{done.stderr}"
        outputs.append(done.stdout + done.stderr)
    assert "CreateContainer" in outputs[0] and "RecreateContainer" not in outputs[2]
    for output in outputs:
        assert SECRET not in output and TOKEN not in output

    web = f"{project_name}-web-1"
    assert container_env(web, "DB_PASSWORD") == SECRET
    assert container_env(web, "API_TOKEN") == TOKEN
    assert docker_cli("exec", web, "cat", "/run/secrets/db_password") == SECRET
    # The secret was copied in, not bind-mounted from a host file.
    assert "/run/secrets" not in docker_cli("inspect", "-f", "{{json .Mounts}}", web)
    assert assert_nowhere_under(state, SECRET, TOKEN) > 0
    assert assert_nowhere_under(app, SECRET, TOKEN) == 4


@pytest.fixture
def reconciler(tmp_path: Path, project_name: str) -> Iterator[tuple[Reconciler, Upstream]]:
    upstream = Upstream(tmp_path / "upstream.git")
    text = (
        f"state_dir: {tmp_path / 'state'}\n"
        f"sources:\n  - name: app\n    url: {upstream.url}\n    ref: main\n    project: {project_name}\n"
    )
    config = parse_config(text, str(tmp_path / "agent.yaml"))
    store = StateStore(tmp_path / "state" / "state.db")
    with DockerClient() as docker:
        reconciler = Reconciler(config, store, GitCache(tmp_path / "cache"), docker)
        yield reconciler, upstream
        reconciler.close()
    store.close()


def test_the_agent_deploys_sops_files_and_no_span_holds_a_value(
    tmp_path: Path,
    project_name: str,
    age_key: tuple[Path, str],
    reconciler: tuple[Reconciler, Upstream],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key_file, recipient = age_key
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(key_file))
    agent, upstream = reconciler
    upstream.commit(dict(sops_files(recipient)))
    with capture_spans() as exporter:
        result = agent.reconcile(agent.config.sources[0], Trigger.MANUAL)
    spans = list(exporter.get_finished_spans())
    assert result.result is Result.SUCCESS, result
    assert {"load", "execute"} <= {s.name for s in spans}
    for text in map(span_text, spans):
        assert SECRET not in text and TOKEN not in text
    web = f"{project_name}-web-1"
    assert container_env(web, "DB_PASSWORD") == SECRET
    assert docker_cli("exec", web, "cat", "/run/secrets/db_password") == SECRET
    assert assert_nowhere_under(tmp_path / "state", SECRET, TOKEN) > 0


def span_text(span: ReadableSpan) -> str:
    """Everything a span exports: name, attributes, events, status."""
    parts = [span.name, repr(dict(span.attributes or {})), str(span.status.description)]
    parts += [f"{e.name} {dict(e.attributes or {})!r}" for e in span.events]
    return "\n".join(parts)
