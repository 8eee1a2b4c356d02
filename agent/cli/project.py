"""Which Compose project a command acts on: its files, its load, its name, its trust and deploy policies.

Also the options that say so (``-f``, ``--env-file``, ``--profile``, ``--ignore-build``,
``--sops-age-key-file``, ``--gnupghome``, ``-p``, ``--trust-policy``, ``--policy``), shared by every command
that takes a project.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

from gitdock.agent.applied_store import default_state_dir
from gitdock.agent.cli.common import UsageError
from gitdock.specs.model import Project

if TYPE_CHECKING:
    from gitdock.runtime.admission import Policy
    from gitdock.runtime.trust.resolve import TrustContext
    from gitdock.specs.keyring import Keyring

__all__ = [
    "DEFAULT_FILES",
    "add_policy_args",
    "add_project_args",
    "add_trust_args",
    "admission_policy",
    "compose_files",
    "load_project",
    "project_name",
    "state_dir",
    "trust_context",
]

DEFAULT_FILES: Final = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")


def compose_files(args: argparse.Namespace) -> list[str]:
    """The ``-f`` files, else the first of DEFAULT_FILES here. Raises UsageError if none."""
    if args.file:
        return list(args.file)
    for name in DEFAULT_FILES:
        if Path(name).is_file():
            return [name]
    raise UsageError(f"no Compose file given and none of {', '.join(DEFAULT_FILES)} in {os.getcwd()}")


def state_dir(args: argparse.Namespace) -> Path:
    """``--state-dir`` if the command has it and it is given, else the default state directory."""
    given = getattr(args, "state_dir", None)
    return Path(given) if given else default_state_dir()


def project_root(first_file: str) -> str | None:
    """The git work tree holding ``first_file`` (the directory with ``.git``), or None.

    The project's sources must stay inside it, as they must stay inside the agent's checkout:
    the CLI loads a repository as the agent would deploy it. Outside any work tree the root is
    the first file's directory (the loader's default)."""
    here = Path(os.path.abspath(first_file)).parent
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return str(directory)
    return None


def load_project(args: argparse.Namespace) -> Project:
    """Load the Compose files, reusing the last validated load while none of them changed."""
    return load_project_fingerprinted(args)[0]


def load_project_fingerprinted(args: argparse.Namespace) -> tuple[Project, Path | None]:
    """``load_project``, and where what is derived from this very load may be kept (a file
    named by the load's fingerprint in the load cache), or None when nothing may be."""
    from gitdock.specs.cache import load_project_fingerprinted as load

    files = compose_files(args)
    cache = state_dir(args) / "load-cache"
    project, fingerprint = load(
        files,
        cache,
        root=project_root(files[0]),
        project_name=args.project_name,
        env_file=args.env_file,
        profiles=getattr(args, "profile", None) or None,
        ignore_build=getattr(args, "ignore_build", False),
        keyring=sops_keyring(args),
    )
    return project, None if fingerprint is None else cache / f"{fingerprint}.desired"


def sops_keyring(args: argparse.Namespace) -> Keyring | None:
    """The keys for SOPS-encrypted files the options name; None finds them as sops does."""
    age_key_file, gnupghome = getattr(args, "sops_age_key_file", None), getattr(args, "gnupghome", None)
    if not age_key_file and not gnupghome:
        return None
    from gitdock.specs.keyring import Keyring

    overrides = {"SOPS_AGE_KEY_FILE": age_key_file or "", "GNUPGHOME": gnupghome or ""}
    return Keyring.from_environ({**os.environ, **{k: v for k, v in overrides.items() if v}})


def project_name(args: argparse.Namespace) -> str:
    """``-p``, else the loaded project's name (loading the files only then)."""
    if args.project_name:
        return str(args.project_name)
    return load_project(args).name


def trust_context(args: argparse.Namespace) -> TrustContext | None:
    """The trust policy from --trust-policy or GITDOCK_TRUST_POLICY, if any."""
    path = args.trust_policy or os.environ.get("GITDOCK_TRUST_POLICY")
    if not path:
        return None
    from gitdock.agent.policy import load_trust_config

    return load_trust_config(path).context(Path(path).resolve().parent)


def add_project_args(p: argparse.ArgumentParser, *, files: bool = True) -> None:
    """``-p``, and with `files` the options that choose and load the Compose files."""
    if files:
        p.add_argument("-f", "--file", action="append", help="Compose file (repeatable)")
        p.add_argument(
            "--env-file", help="file of variables for interpolation (default: .env beside the file)"
        )
        p.add_argument(
            "--profile",
            action="append",
            help="enable services of this profile (repeatable; default: $COMPOSE_PROFILES)",
        )
        p.add_argument(
            "--ignore-build",
            action="store_true",
            help="deploy services that have both build: and image: from the image, ignoring build:",
        )
        p.add_argument(
            "--sops-age-key-file",
            metavar="FILE",
            help="age identities for SOPS-encrypted env, config and secret files "
            "(default: $SOPS_AGE_KEY_FILE, $SOPS_AGE_KEY)",
        )
        p.add_argument(
            "--gnupghome", metavar="DIR", help="GnuPG home for PGP-encrypted SOPS files (default: $GNUPGHOME)"
        )
    p.add_argument(
        "-p", "--project-name", help="project name (default: name: in the file, else its directory)"
    )


def admission_policy(args: argparse.Namespace) -> Policy | None:
    """The deploy policy of ``--policy-file`` and ``--policy`` (which wins for the level); None
    (privileged: anything goes) when neither is given. Raises PolicyConfigError."""
    path, level = getattr(args, "policy_file", None), getattr(args, "policy", None)
    if path is None and level is None:
        return None  # before the imports: the YAML reader is not on a plain apply's path
    from gitdock.runtime.admission import Level, PolicyConfigError, parse_policy
    from gitdock.specs.errors import SpecError
    from gitdock.specs.yamlpos import load_yaml

    data: object = {}
    if path is not None:
        try:
            doc, problems = load_yaml(Path(path).read_text(encoding="utf-8"), path)
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise PolicyConfigError(f"{path}: cannot read the policy file: {why}") from None
        if problems:
            raise SpecError(problems)
        data = doc.data if doc.data is not None else {}
    if isinstance(data, str):
        data = {"level": data}
    if level is not None and isinstance(data, dict):
        data = {**data, "level": Level(level).value}
    try:
        return parse_policy(data, where="")
    except PolicyConfigError as exc:
        raise PolicyConfigError(f"{path or '--policy'}: {exc}") from None


def add_policy_args(p: argparse.ArgumentParser) -> None:
    """``--policy LEVEL`` and ``--policy-file FILE``: the deploy policy (README: Deploy policy)."""
    p.add_argument(
        "--policy",
        choices=["privileged", "baseline", "restricted"],
        help="refuse a project that breaks this deploy policy level, before anything is touched "
        "(default: privileged, anything goes; the agent's sources default to baseline)",
    )
    p.add_argument(
        "--policy-file",
        metavar="FILE",
        help="the deploy policy as YAML: {level, exceptions: [{service, field}], bind_prefixes: [...]}",
    )


def add_trust_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-policy",
        metavar="FILE",
        help="resolve every image to a digest and verify its signature by this policy "
        "(default: $GITDOCK_TRUST_POLICY; without one, images are used as tagged)",
    )
