"""The trust policy file: which keys must have signed which images.

```yaml
keys:
  ci:
    public_key_file: cosign.pub      # PKIX PEM; or public_key: "-----BEGIN PUBLIC KEY-----..."
    rekor: ignore                    # required | if-present | ignore
rules:                               # first match wins; * crosses /
  - pattern: "registry.example.com/team/*"
    keys: [ci]
    match: any-of                    # or all-of
default: require                     # or allow-unsigned (a warning in the plan)
insecure_registries: ["localhost:5000"]
registry_auth_file: ~/.docker/config.json
rekor_public_key_file: rekor.pub
trusted_root_file: trusted_root.json # Sigstore's format: Fulcio CAs, Rekor, CT logs (keyless)
```

A rule may name keyless signers instead of (or beside) keys; a keyless signature counts as
one signer for `all-of`:

```yaml
rules:
  - pattern: "ghcr.io/team/*"
    keyless:
      - identity: release@example.com            # or identity_regexp (whole value)
        issuer: https://accounts.example.com     # or issuer_regexp
```

Relative paths are relative to the policy file. The same model is the agent config's
``trust:`` section.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gitdock.agent.yamlconfig import validation_problems
from gitdock.runtime.trust.policy import (
    BuildAction,
    DefaultAction,
    KeylessIdentity,
    KeyMatch,
    TrustKey,
    TrustPolicy,
    TrustRule,
)
from gitdock.runtime.trust.registry import RegistryClient
from gitdock.runtime.trust.resolve import TrustContext
from gitdock.runtime.trust.signature import IdentityMode, RekorMode
from gitdock.specs.errors import PermanentError
from gitdock.specs.yamlpos import load_yaml


class PolicyError(PermanentError):
    """The trust policy file is invalid."""


class KeyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    public_key: str | None = None
    public_key_file: Path | None = None
    rekor: RekorMode = RekorMode.IGNORE


class KeylessConfig(BaseModel):
    """A keyless signer: certificate SAN and OIDC issuer, each exact or a whole-value regexp."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    identity: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None


class RuleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pattern: str
    keys: list[str] = Field(default_factory=list)
    keyless: list[KeylessConfig] = Field(default_factory=list)
    match: KeyMatch = KeyMatch.ANY_OF
    identity: IdentityMode = IdentityMode.EXACT_REPOSITORY


class TrustConfig(BaseModel):
    """Keys, rules and registry settings for resolving and verifying images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: dict[str, KeyConfig] = Field(default_factory=dict)
    rules: list[RuleConfig] = Field(default_factory=list)
    default: DefaultAction = DefaultAction.REQUIRE
    build: BuildAction = BuildAction.ALLOW  # deny: refuse services built from the revision
    rekor_public_key_file: Path | None = None
    trusted_root_file: Path | None = None  # Sigstore trusted_root.json, for keyless rules
    insecure_registries: list[str] = Field(default_factory=list)
    registry_auth_file: Path | None = None
    registry_timeout: float = 10.0

    def policy(self, base_dir: Path) -> TrustPolicy:
        """Read the key files and build the pure policy. Raises PolicyError."""
        keys: dict[str, TrustKey] = {}
        try:
            for name, key in self.keys.items():
                if (key.public_key is None) == (key.public_key_file is None):
                    raise PolicyError(f"keys.{name}: set exactly one of public_key and public_key_file")
                pem = key.public_key or _read(base_dir, key.public_key_file, f"keys.{name}.public_key_file")
                keys[name] = TrustKey(public_key=pem, rekor=key.rekor)
            rekor = (
                _read(base_dir, self.rekor_public_key_file, "rekor_public_key_file")
                if self.rekor_public_key_file
                else None
            )
            root = (
                _read(base_dir, self.trusted_root_file, "trusted_root_file")
                if self.trusted_root_file
                else None
            )
            return TrustPolicy(
                keys=keys,
                rules=tuple(_rule(r) for r in self.rules),
                default=self.default,
                build=self.build,
                rekor_public_key=rekor,
                trusted_root=root,
            )
        except ValidationError as exc:
            raise PolicyError(f"trust policy: {_first_error(exc)}") from None

    def context(self, base_dir: Path) -> TrustContext:
        auth = self.registry_auth_file.expanduser() if self.registry_auth_file else None
        client = RegistryClient(
            insecure=self.insecure_registries, auth_file=auth, timeout=self.registry_timeout
        )
        return TrustContext(self.policy(base_dir), client)


def _rule(config: RuleConfig) -> TrustRule:
    return TrustRule(
        pattern=config.pattern,
        keys=tuple(config.keys),
        keyless=tuple(KeylessIdentity(**k.model_dump()) for k in config.keyless),
        match=config.match,
        identity=config.identity,
    )


def _read(base_dir: Path, path: Path | None, field: str) -> str:
    assert path is not None
    full = path.expanduser()
    if not full.is_absolute():
        full = base_dir / full
    try:
        return full.read_text()
    except OSError as exc:
        raise PolicyError(f"{field}: cannot read {full}: {exc.strerror}") from None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    return f"{where}: {err['msg']}" if where else str(err["msg"])


def load_trust_config(path: str | Path) -> TrustConfig:
    """Load and validate a policy file; every problem names the file, line and field."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise PolicyError(f"{file}: cannot read the trust policy: {exc.strerror}") from None
    doc, problems = load_yaml(text, str(file))
    if problems:
        raise PolicyError("; ".join(str(p) for p in problems))
    try:
        return TrustConfig.model_validate(doc.data or {})
    except ValidationError as exc:
        raise PolicyError("\n".join(validation_problems(exc, doc, str(file)))) from None
