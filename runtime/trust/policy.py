"""The trust policy model: named keys, ordered rules, and the default for unmatched images.

Pure data (pydantic) and pure rule matching: no I/O. `verify.verify_image` applies a policy;
`gitdock.agent.policy` reads one from a file.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gitdock.runtime.trust.keyless import CertificateIdentity
from gitdock.runtime.trust.keys import PublicKey, load_public_key
from gitdock.runtime.trust.signature import IdentityMode, RekorMode
from gitdock.runtime.trust.trusted_root import TrustedRoot, TrustedRootError, parse_trusted_root
from gitdock.specs.reference import ImageReference

__all__ = [
    "DefaultAction",
    "KeyMatch",
    "KeylessIdentity",
    "TrustKey",
    "TrustPolicy",
    "TrustRule",
]


class BuildAction(StrEnum):
    """Whether a service may run an image built from the revision (it has no signature to check)."""

    ALLOW = "allow"
    DENY = "deny"


class DefaultAction(StrEnum):
    """What happens to an image that no rule matches."""

    REQUIRE = "require"
    ALLOW_UNSIGNED = "allow-unsigned"


class KeyMatch(StrEnum):
    """Whether one of a rule's keys is enough, or all are needed."""

    ANY_OF = "any-of"
    ALL_OF = "all-of"


class TrustKey(BaseModel):
    """A trusted public key (PKIX PEM) and how its Rekor entries are treated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    public_key: str
    rekor: RekorMode = RekorMode.IGNORE

    @field_validator("public_key")
    @classmethod
    def _loads(cls, value: str) -> str:
        load_public_key(value.encode())
        return value

    def load(self) -> PublicKey:
        return load_public_key(self.public_key.encode())


class KeylessIdentity(BaseModel):
    """A keyless signer: certificate SAN (`identity`, or `identity_regexp`) and OIDC issuer.

    Exactly one of `identity` / `identity_regexp` and one of `issuer` / `issuer_regexp`;
    a regexp must match the whole value.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    identity: str | None = None
    identity_regexp: str | None = None
    issuer: str | None = None
    issuer_regexp: str | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> KeylessIdentity:
        if (self.identity is None) == (self.identity_regexp is None):
            raise ValueError("set exactly one of identity and identity_regexp")
        if (self.issuer is None) == (self.issuer_regexp is None):
            raise ValueError("set exactly one of issuer and issuer_regexp")
        for name in ("identity_regexp", "issuer_regexp"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"{name}: {pattern!r} is not a regular expression ({exc})") from None
        return self

    def matcher(self) -> CertificateIdentity:
        return CertificateIdentity(self.identity, self.identity_regexp, self.issuer, self.issuer_regexp)


class TrustRule(BaseModel):
    """Images whose `registry/repository` matches `pattern` (fnmatch; `*` crosses `/`) need a signer.

    Signers are the named `keys` and, when `keyless` lists identities, one keyless signature
    by any of them (it counts as one more signer for `all-of`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    keys: tuple[str, ...] = ()
    keyless: tuple[KeylessIdentity, ...] = ()
    match: KeyMatch = KeyMatch.ANY_OF
    identity: IdentityMode = IdentityMode.EXACT_REPOSITORY

    @model_validator(mode="after")
    def _has_signer(self) -> TrustRule:
        if not self.keys and not self.keyless:
            raise ValueError(f"rule {self.pattern!r}: list keys, keyless identities, or both")
        return self

    def matches(self, ref: ImageReference) -> bool:
        return fnmatch.fnmatchcase(ref.repository_ref, self.pattern)


class TrustPolicy(BaseModel):
    """Named keys, ordered rules (first match wins), and the default for unmatched images."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keys: dict[str, TrustKey] = Field(default_factory=dict)
    rules: tuple[TrustRule, ...] = ()
    default: DefaultAction = DefaultAction.REQUIRE
    rekor_public_key: str | None = None
    trusted_root: str | None = None  # Sigstore trusted_root.json text, for keyless rules
    build: BuildAction = BuildAction.ALLOW

    @field_validator("trusted_root")
    @classmethod
    def _root_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_trusted_root(value)
            except TrustedRootError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("rekor_public_key")
    @classmethod
    def _rekor_loads(cls, value: str | None) -> str | None:
        if value is not None:
            load_public_key(value.encode())
        return value

    @model_validator(mode="after")
    def _rules_name_known_keys(self) -> TrustPolicy:
        for i, rule in enumerate(self.rules):
            unknown = sorted(set(rule.keys) - set(self.keys))
            if unknown:
                raise ValueError(f"rules[{i}] ({rule.pattern}): unknown key(s) {', '.join(unknown)}")
        keyless = [rule.pattern for rule in self.rules if rule.keyless]
        if keyless and self.trusted_root is None:
            raise ValueError(f"rules {', '.join(keyless)} have keyless identities but trusted_root is unset")
        needs_rekor = [n for n, k in self.keys.items() if k.rekor is not RekorMode.IGNORE]
        if needs_rekor and self.rekor_public_key is None:
            raise ValueError(
                f"keys {', '.join(needs_rekor)} check Rekor entries but rekor_public_key is unset"
            )
        return self

    def rule_for(self, ref: ImageReference) -> TrustRule | None:
        """The first rule whose pattern matches `ref`, or None."""
        return next((rule for rule in self.rules if rule.matches(ref)), None)

    def rekor_key(self) -> PublicKey | None:
        """The Rekor public key, when the policy names one."""
        return load_public_key(self.rekor_public_key.encode()) if self.rekor_public_key else None

    def trusted_root_parsed(self) -> TrustedRoot | None:
        """The parsed trusted root (parsed once per process), when the policy has one."""
        return parse_trusted_root(self.trusted_root) if self.trusted_root is not None else None

    def policy_hash(self) -> str:
        """Stable hash of the whole policy, part of the verification cache key."""
        # ``build`` decides about images no registry holds, so it is no part of any verification.
        return hashlib.sha256(self.model_dump_json(exclude={"build"}).encode()).hexdigest()
