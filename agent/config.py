"""The agent's configuration file (``agent.yaml``): what to watch, where, and with which secrets.

Loaded with ``specs.yamlpos`` so every problem names ``file:line:column`` and the field, and
validated with pydantic; all problems are reported together as one ConfigError.

Secrets are never written in the file: a secret is ``{file: PATH}`` or ``{env: NAME}`` and is
read when it is used, so no value can reach a log line, an error, the status API, history
or a ``repr``. A URL with an embedded password is refused for the same reason.

Environment overrides (they win over the file):

    GITDOCK_LISTEN           listen address, HOST:PORT
    GITDOCK_STATE_DIR        state directory
    GITDOCK_DOCKER_HOST      Docker engine (unix:///path or tcp://host:port)
    GITDOCK_API_TOKEN_FILE   file holding the API token for control endpoints
    GITDOCK_INTERVAL         default poll interval (``30s``, ``5m``, seconds as a number)

Interpolation: a source's Compose files see only its ``variables`` (plus a ``.env`` file next
to the first Compose file in the repository) and the agent variables named in ``pass_env``.
The agent's own environment is not passed by default, so the agent's secrets never leak into
a deployment and what is deployed depends on git and this file only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from gitdock.agent.commits import VerifyMode
from gitdock.agent.git import (
    Auth,
    BasicAuth,
    GitRemote,
    InvalidRemote,
    SecretRef,
    SshKeyAuth,
    TokenAuth,
    display_url,
)
from gitdock.agent.notify import (
    DEFAULT_API_URLS,
    Forge,
    SourceTargets,
    StatusTarget,
    WebhookFormat,
    WebhookTarget,
    redact_url,
)
from gitdock.agent.policy import TrustConfig
from gitdock.agent.signers import CommitVerifier, GpgVerifier, SshVerifier
from gitdock.agent.targets import DEFAULT_PARALLEL, TargetConfig
from gitdock.agent.telemetry import TelemetryConfig
from gitdock.agent.webhooks import Provider
from gitdock.agent.yamlconfig import validation_problems
from gitdock.runtime.admission import BASELINE, Policy, PolicyConfigError, parse_policy
from gitdock.specs.errors import PermanentError
from gitdock.specs.yamlpos import load_yaml

__all__ = [
    "ENV_OVERRIDES",
    "AgentConfig",
    "ConfigError",
    "DriftPolicy",
    "NotifyConfig",
    "Secret",
    "SourceConfig",
    "SourceMode",
    "VerifyConfig",
    "load_config",
    "notify_targets",
    "parse_config",
]

DEFAULT_LISTEN: Final = "127.0.0.1:9000"
DEFAULT_STATE_DIR: Final = "/var/lib/gitdock"

ENV_OVERRIDES: Final = {
    "GITDOCK_LISTEN": "listen",
    "GITDOCK_STATE_DIR": "state_dir",
    "GITDOCK_DOCKER_HOST": "docker_host",
    "GITDOCK_API_TOKEN_FILE": "api_token",
    "GITDOCK_INTERVAL": "defaults.interval",
}

_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)(ms|s|m|h))+")
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(PermanentError):
    """The agent configuration is invalid or cannot be read. Lists every problem."""


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``30s``, ``5m``, ``1h30m``, ``500ms``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION_RE.fullmatch(value.strip()):
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART_RE.findall(value.strip()))
    else:
        raise ValueError(f"{str(value)[:40]!r} is not a duration (use 30s, 5m, 1h or seconds)")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _parse_deploy_policy(value: Any) -> Policy:
    """A ``policy:`` value (a level name, or {level, exceptions, bind_prefixes}) as a Policy."""
    if isinstance(value, Policy):
        return value
    try:
        return parse_policy(value, where="")
    except PolicyConfigError as exc:
        raise ValueError(str(exc)) from None


def _dump_deploy_policy(policy: Policy) -> dict[str, Any]:
    """A Policy as its configuration (``model_dump``); ``parse_policy`` reads it back."""
    return {
        "level": policy.level.value,
        "exceptions": [{"service": e.service, "field": e.field} for e in policy.exemptions],
        "bind_prefixes": list(policy.bind_prefixes),
    }


DeployPolicy = Annotated[
    Policy, PlainValidator(_parse_deploy_policy), PlainSerializer(_dump_deploy_policy, return_type=dict)
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(_Model):
    """Where a secret lives: ``{file: PATH}`` or ``{env: NAME}``. Never the value itself."""

    file: Path | None = None
    env: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_literal(cls, data: Any) -> Any:
        if isinstance(data, str):
            # The value is deliberately not echoed: it may be the secret itself.
            raise ValueError("a secret must be {file: PATH} or {env: NAME}, not written inline")
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("a secret needs exactly one of `file` or `env`")
        if self.env is not None and not _ENV_NAME_RE.fullmatch(self.env):
            raise ValueError(f"{self.env!r} is not an environment variable name")
        return self

    def ref(self) -> SecretRef:
        """The git seam's SecretRef (read lazily, at use)."""
        return SecretRef(file=self.file, env=self.env)

    def read(self) -> str:
        """The secret now. Raises SourceAuthError (a PermanentError) naming where it was looked for."""
        return self.ref().read()


class TokenAuthConfig(_Model):
    token: Secret
    username: str = "x-access-token"


class BasicAuthConfig(_Model):
    username: str
    password: Secret


class SshAuthConfig(_Model):
    private_key: Path
    passphrase: Secret | None = None
    username: str | None = None
    known_hosts: Path | None = None
    insecure_skip_host_key_check: bool = False


class AuthConfig(_Model):
    """One of ``token``, ``basic`` or ``ssh``."""

    token: TokenAuthConfig | None = None
    basic: BasicAuthConfig | None = None
    ssh: SshAuthConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> AuthConfig:
        if sum(x is not None for x in (self.token, self.basic, self.ssh)) != 1:
            raise ValueError("auth needs exactly one of `token`, `basic` or `ssh`")
        return self

    def to_auth(self) -> Auth:
        if self.token is not None:
            return TokenAuth(self.token.token.ref(), self.token.username)
        if self.basic is not None:
            return BasicAuth(self.basic.username, self.basic.password.ref())
        assert self.ssh is not None
        s = self.ssh
        return SshKeyAuth(
            s.private_key,
            s.passphrase.ref() if s.passphrase else None,
            s.username,
            s.known_hosts,
            s.insecure_skip_host_key_check,
        )


class WebhookConfig(_Model):
    """The shared secret of one provider's webhooks (and, for ``generic``, the header it comes in)."""

    secret: Secret
    header: str | None = None
    # generic: the header naming each delivery, so a repeated one triggers nothing (default
    # X-Gitdock-Delivery; without it the body's digest stands in).
    delivery_header: str | None = None


class ApiConfig(_Model):
    """The HTTP API: who may read it without the token, and how long one client may take."""

    public_reads: bool = False  # GET /api/... without the API token (control still needs it)
    read_timeout: Duration = 10.0  # a request's head, then its body, must arrive within this
    idle_timeout: Duration = 30.0  # a kept-alive connection with no new request is closed after this


class DriftPolicy(str, Enum):
    """What to do when the live state drifts from the applied revision: heal it, or only report it."""

    REPORT = "report"
    HEAL = "heal"


class Defaults(_Model):
    interval: Duration = 60.0
    jitter: Duration | None = None  # default: 10 % of the interval, at most 30 s
    timeout: Duration = 120.0  # git fetch timeout
    wait_timeout: Duration = 120.0  # service_healthy / completed waits in converge
    debounce: Duration = 0.2  # webhook burst window
    settle: Duration = 10.0  # health gate: a container without healthcheck runs this long unrestarted
    health_timeout: Duration = 120.0  # health gate: not ready by then and the revision failed
    reconcile_budget: Duration = 900.0  # wall clock for one reconcile; over it, retried later
    # Mutating Docker calls in flight on one engine, all its sources together (agent/targets.py).
    parallel: int = Field(default=DEFAULT_PARALLEL, ge=1, le=256)
    # The deploy policy (runtime/admission.py) of every source that sets none: baseline.
    policy: DeployPolicy = BASELINE


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | Path) else value


class VerifyKeysConfig(_Model):
    """Who may sign: an SSH ``allowed_signers`` file and/or OpenPGP public key files."""

    ssh: Path | None = None
    gpg: Annotated[tuple[Path, ...], BeforeValidator(_as_list)] = ()

    @model_validator(mode="after")
    def _some(self) -> VerifyKeysConfig:
        if self.ssh is None and not self.gpg:
            raise ValueError("verify.keys needs `ssh` (an allowed_signers file) or `gpg` (public key files)")
        return self


class VerifyConfig(_Model):
    """Signed commits for one source (agent/signers.py): refuse a revision unless signed."""

    mode: VerifyMode = VerifyMode.HEAD
    keys: VerifyKeysConfig
    max_commits: int = Field(default=100, ge=1, le=10_000)

    def verifier(self, base_dir: Path) -> CommitVerifier:
        """The source's CommitVerifier; relative key paths are taken from `base_dir`."""

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else base_dir / p

        keys = self.keys
        return CommitVerifier(
            self.mode,
            ssh=SshVerifier(fix(keys.ssh)) if keys.ssh else None,
            gpg=GpgVerifier([fix(p) for p in keys.gpg]) if keys.gpg else None,
            max_commits=self.max_commits,
        )


def _check_http_url(url: str, *, credentials: bool) -> None:
    """Raise ValueError unless ``url`` is http(s) with a host (and, unless allowed, no password)."""
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    shown = redact_url(url, keep_path=False)
    if not ok:
        raise ValueError(f"{shown}: not an http:// or https:// URL")
    if not credentials and (parts.username or parts.password):
        raise ValueError(f"{shown}: credentials in the URL are not allowed; use `token`")


def _fix_secret(secret: Secret, base_dir: Path) -> Secret:
    if secret.file is None or secret.file.is_absolute():
        return secret
    return secret.model_copy(update={"file": base_dir / secret.file})


def _constant(value: str) -> Callable[[], str]:
    return lambda: value


class StatusConfig(_Model):
    """One forge's commit statuses: its API, the repository, a token allowed to write statuses.

    ``url`` defaults to https://api.github.com (GitHub: the API root) and https://gitlab.com
    (GitLab: the instance); Gitea and Forgejo need their instance's root URL.
    """

    url: str | None = None
    repo: str
    token: Secret

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            _check_http_url(v, credentials=False)
        return v

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        parts = v.strip("/").split("/")
        if len(parts) < 2 or not all(parts) or any(p in (".", "..") for p in parts):
            raise ValueError(f"{v!r} is not OWNER/NAME (GitLab: the project's full path)")
        return "/".join(parts)


class NotifyWebhookConfig(_Model):
    """A webhook receiver: its URL (or a secret holding it, as a Slack URL is) and the body's shape."""

    url: str | Secret
    format: WebhookFormat = WebhookFormat.JSON

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | Secret) -> str | Secret:
        if isinstance(v, str):
            _check_http_url(v, credentials=True)
        return v


class NotifyConfig(_Model):
    """Where one source's outcomes go (agent/notify.py): commit statuses and webhooks."""

    github: StatusConfig | None = None
    gitea: StatusConfig | None = None
    gitlab: StatusConfig | None = None
    webhooks: tuple[NotifyWebhookConfig, ...] = ()
    context: str | None = None  # the status's context (GitLab: its name); default gitdock/<source>
    target_url: str | None = None  # the link a commit status carries

    @model_validator(mode="after")
    def _gitea_url(self) -> NotifyConfig:
        if self.gitea is not None and self.gitea.url is None:
            raise ValueError("gitea needs `url`, the instance's root URL (https://gitea.example.com)")
        return self

    def targets(self, name: str, project: str, ref: str, repository: str, base_dir: Path) -> SourceTargets:
        """The Notifier's targets for source ``name``; relative secret files are taken from ``base_dir``."""
        context = self.context or f"gitdock/{name}"
        statuses = []
        for forge in Forge:
            status: StatusConfig | None = getattr(self, forge.value)
            if status is not None:
                url = status.url or DEFAULT_API_URLS[forge.value]
                token = _fix_secret(status.token, base_dir).read
                statuses.append(StatusTarget(forge, url, status.repo, token, context, self.target_url))
        hooks = []
        for hook in self.webhooks:
            if isinstance(hook.url, str):
                shown = f"webhook {redact_url(hook.url, keep_path=False)}"
                hooks.append(WebhookTarget(_constant(hook.url), hook.format, shown))
            else:
                secret = _fix_secret(hook.url, base_dir)
                where = str(secret.file) if secret.file is not None else f"${secret.env}"
                hooks.append(WebhookTarget(secret.read, hook.format, f"webhook (URL from {where})"))
        return SourceTargets(tuple(statuses), tuple(hooks), project, ref, repository)


def notify_targets(config: AgentConfig) -> dict[str, SourceTargets]:
    """What each source with ``notify:`` tells, by source name, for the Notifier."""
    return {
        s.name: s.notify.targets(s.name, s.project_name, s.ref, s.display_url, config.base_dir)
        for s in config.sources
        if s.notify is not None
    }


class RollbackMode(str, Enum):
    """What to do when a revision fails its health gate: re-apply the last healthy one, or not."""

    AUTO = "auto"
    OFF = "off"


class SourceMode(str, Enum):
    """How a source is deployed: as containers on one engine, or as a stack on a Swarm manager."""

    CONTAINERS = "containers"
    SWARM = "swarm"


class SourceConfig(_Model):
    """One git source deployed as one Compose project."""

    name: str
    url: str
    ref: str = "main"
    path: str = ""
    files: tuple[str, ...] = ("compose.yaml",)
    project: str | None = None
    interval: Duration | None = None
    jitter: Duration | None = None
    variables: dict[str, str] = Field(default_factory=dict, repr=False)  # may hold passwords
    pass_env: tuple[str, ...] = ()
    auth: AuthConfig | None = None
    drift: DriftPolicy = DriftPolicy.HEAL
    # The health gate and rollback (runtime/health.py); unset: the defaults' settle and timeout.
    settle: Duration | None = None
    health_timeout: Duration | None = None
    rollback: RollbackMode = RollbackMode.AUTO
    # Sources that must be healthy at their current revision before this one is reconciled.
    depends_on: tuple[str, ...] = ()
    # Image trust for this source; replaces the agent-wide `trust:` when set.
    trust: TrustConfig | None = None
    # Signed commits: refuse a revision whose commits are not signed by an allowed key.
    verify: VerifyConfig | None = None
    # The deploy policy for this source; replaces `defaults.policy` when set.
    policy: DeployPolicy | None = None
    # Commit statuses and webhook notifications of each outcome (agent/notify.py).
    notify: NotifyConfig | None = None
    # The Docker engine it deploys to (agent/targets.py: a host with tls/ssh, or a context);
    # None: the agent's own engine.
    target: TargetConfig | None = None
    # `swarm`: the project is a stack on the target, which must be a Swarm manager
    # (runtime/swarm/); Swarm's update monitor stands in for the health gate and rollback.
    mode: SourceMode = SourceMode.CONTAINERS

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid name (lower-case letters, digits, '-' and '_')")
        return v

    @field_validator("project")
    @classmethod
    def _project(cls, v: str | None) -> str | None:
        if v is not None and not _NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid project name (lower-case letters, digits, '-' and '_')")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if "://" in v:
            rest = v.split("://", 1)[1].split("/", 1)[0]
            if "@" in rest and ":" in rest.split("@", 1)[0]:
                raise ValueError(
                    f"{display_url(v)}: credentials in the URL are not allowed; use auth.basic or auth.token"
                )
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        parts = [p for p in v.strip("/").split("/") if p and p != "."]
        if v.startswith("/") or ".." in parts:
            raise ValueError(f"{v!r}: the path must be relative to the repository root, without '..'")
        return "/".join(parts)

    @field_validator("files")
    @classmethod
    def _files(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one Compose file is needed")
        for f in v:
            if f.startswith("/") or ".." in f.split("/"):
                raise ValueError(f"{f!r}: files are relative to the source path, without '..'")
        return v

    @field_validator("variables", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {
                str(k): ("" if x is None else str(x).lower() if isinstance(x, bool) else str(x))
                for k, x in v.items()
            }
        return v

    @field_validator("pass_env")
    @classmethod
    def _pass_env(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not _ENV_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _remote(self) -> SourceConfig:
        try:
            self.remote()
        except InvalidRemote as exc:
            raise ValueError(str(exc)) from None
        return self

    @property
    def project_name(self) -> str:
        return self.project or self.name

    @property
    def display_url(self) -> str:
        return display_url(self.url)

    def remote(self) -> GitRemote:
        """The git seam's view of this source. Raises InvalidRemote."""
        return GitRemote(self.url, self.ref, self.auth.to_auth() if self.auth else None)

    def environ(self, agent_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Variables for interpolation: the passed-through agent variables, then ``variables``."""
        env = os.environ if agent_env is None else agent_env
        out = {name: env[name] for name in self.pass_env if name in env}
        out.update(self.variables)
        return out


class AgentConfig(_Model):
    """The whole agent: where it keeps state, where it listens, and its sources."""

    state_dir: Path = Path(DEFAULT_STATE_DIR)
    listen: str = DEFAULT_LISTEN
    docker_host: str | None = None
    api_token: Secret | None = None
    api: ApiConfig = Field(default_factory=ApiConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    webhooks: dict[Provider, WebhookConfig] = Field(default_factory=dict)
    # Resolve every image to a digest and verify its signature (see agent/policy.py); None: use tags.
    trust: TrustConfig | None = None
    # Traces and metrics (OTLP); the standard OTEL_* variables fill what this leaves unset.
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    sources: tuple[SourceConfig, ...] = ()
    # Where relative paths in the file (trust keys) are resolved; set by the loader.
    base_dir: Path = Path(".")

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        _host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{v!r} is not HOST:PORT")
        return v

    @model_validator(mode="after")
    def _unique(self) -> AgentConfig:
        seen: dict[str, str] = {}
        projects: dict[str, str] = {}
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"source name {s.name!r} is used twice")
            seen[s.name] = s.name
            if s.project_name in projects:
                raise ValueError(
                    f"sources {projects[s.project_name]!r} and {s.name!r} both deploy project "
                    f"{s.project_name!r}; they would undo each other"
                )
            projects[s.project_name] = s.name
        _check_depends_on(self.sources)
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)

    def source(self, name: str) -> SourceConfig | None:
        return next((s for s in self.sources if s.name == name), None)

    def interval(self, source: SourceConfig) -> float:
        return source.interval or self.defaults.interval

    def settle(self, source: SourceConfig) -> float:
        return source.settle if source.settle is not None else self.defaults.settle

    def health_timeout(self, source: SourceConfig) -> float:
        return source.health_timeout if source.health_timeout is not None else self.defaults.health_timeout

    def policy(self, source: SourceConfig) -> Policy:
        """The source's deploy policy: its own ``policy:``, else ``defaults.policy`` (baseline)."""
        return source.policy if source.policy is not None else self.defaults.policy

    def jitter(self, source: SourceConfig) -> float:
        value = source.jitter if source.jitter is not None else self.defaults.jitter
        if value is None:
            value = min(self.interval(source) * 0.1, 30.0)
        return value


def _check_depends_on(sources: tuple[SourceConfig, ...]) -> None:
    """Every ``depends_on`` names another source, and no chain of them comes back round."""
    graph = {s.name: s.depends_on for s in sources}
    for s in sources:
        for other in s.depends_on:
            if other not in graph or other == s.name:
                raise ValueError(
                    f"source {s.name!r}: depends_on names {other!r}, which is not another source"
                )
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            raise ValueError("depends_on has a cycle: " + " -> ".join((*path[path.index(name) :], name)))
        if name not in done:
            for other in graph[name]:
                visit(other, (*path, name))
            done.add(name)

    for name in graph:
        visit(name, ())


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, key in ENV_OVERRIDES.items():
        value = environ.get(name)
        if not value:
            continue
        if key == "api_token":
            data["api_token"] = {"file": value}
        elif key == "defaults.interval":
            defaults = data.get("defaults")
            data["defaults"] = {**(defaults if isinstance(defaults, dict) else {}), "interval": value}
        else:
            data[key] = value


def parse_config(text: str, filename: str, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Validate config text. Raises ConfigError listing every problem as ``file:line:col: field: why``.

    Relative paths (state_dir, secret files, keys) are taken relative to the file's directory.
    """
    env = os.environ if environ is None else environ
    doc, problems = load_yaml(text, filename)
    if problems:
        raise ConfigError("\n".join(str(p) for p in problems))
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}:1:1: the configuration must be a mapping")
    data = dict(data)
    overridden = {key.split(".")[0]: name for name, key in ENV_OVERRIDES.items() if env.get(name)}
    _apply_env(data, env)
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as exc:
        lines = validation_problems(exc, doc, filename, overridden)
        raise ConfigError("\n".join(lines)) from None
    return _resolve_paths(config, Path(filename).resolve().parent)


def _resolve_paths(config: AgentConfig, base: Path) -> AgentConfig:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    def fix_secret(s: Secret | None) -> Secret | None:
        if s is None or s.file is None:
            return s
        return s.model_copy(update={"file": fix(s.file)})

    sources = []
    for s in config.sources:
        auth = s.auth
        if auth is not None:
            if auth.token is not None:
                auth = auth.model_copy(
                    update={"token": auth.token.model_copy(update={"token": fix_secret(auth.token.token)})}
                )
            elif auth.basic is not None:
                basic = auth.basic.model_copy(update={"password": fix_secret(auth.basic.password)})
                auth = auth.model_copy(update={"basic": basic})
            elif auth.ssh is not None:
                ssh = auth.ssh
                ssh = ssh.model_copy(
                    update={
                        "private_key": fix(ssh.private_key),
                        "passphrase": fix_secret(ssh.passphrase),
                        "known_hosts": fix(ssh.known_hosts) if ssh.known_hosts else None,
                    }
                )
                auth = auth.model_copy(update={"ssh": ssh})
        url = s.url
        if url.startswith("file://") and not url.startswith("file:///"):
            url = f"file://{fix(Path(url[len('file://') :]))}"
        sources.append(s.model_copy(update={"auth": auth, "url": url}))
    hooks = {p: h.model_copy(update={"secret": fix_secret(h.secret)}) for p, h in config.webhooks.items()}
    return config.model_copy(
        update={
            "state_dir": fix(config.state_dir),
            "api_token": fix_secret(config.api_token),
            "webhooks": hooks,
            "sources": tuple(sources),
            "base_dir": base,
        }
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate ``path``. Raises ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{path}: cannot read the agent configuration: {reason}") from None
    return parse_config(text, str(path), environ)
