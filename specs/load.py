"""Load Compose files into a normalised ``model.Project``: the spec package's entry point.

The pipeline, one module per stage: ``read`` (files, ``.env``, include, extends: one merged
document with positions) -> ``checks.check_compose`` (keys, types, meaning) ->
``normalise`` (the model). ``load_project_with_inputs`` runs it; the other entry points
only choose what to do with its warnings and inputs (``cache.load_project_cached`` reuses a
result while its inputs are unchanged).

The only I/O is reading the files named (Compose files, ``.env``, services' env files,
config and secret files): no Docker, no network. Every problem found is collected and
raised together as one SpecError, so a file with ten mistakes is fixed in one commit, not ten.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypedDict, Unpack

from gitdock.specs.checks import check_compose
from gitdock.specs.errors import GitdockError, PermanentError, SpecError, SpecProblem
from gitdock.specs.model import Project
from gitdock.specs.normalise import choose_project_name, normalise_project, normalise_project_name
from gitdock.specs.read import Reader

if TYPE_CHECKING:
    from gitdock.specs.keyring import Keyring  # the SOPS reader's: loaded when a file needs it

__all__ = [
    "LoadCrashed",
    "LoadOptions",
    "StrPath",
    "load_project",
    "load_project_with_inputs",
    "load_project_with_warnings",
    "normalise_project_name",
]

log = logging.getLogger("gitdock.specs")

StrPath = str | os.PathLike[str]


class LoadOptions(TypedDict, total=False):
    """How to load: the keyword arguments every entry point takes.

    ``project_name`` overrides ``name:`` and the directory's name. ``environ`` defaults to
    ``os.environ`` and overrides ``env_file``, which defaults to ``.env`` beside the first
    file when that exists. ``profiles`` are the active profiles; None reads
    ``COMPOSE_PROFILES``. ``ignore_build`` drops ``build:`` from services that also name an
    ``image:`` instead of refusing them. ``keyring`` opens SOPS-encrypted env, config and
    secret files; None finds the keys as sops does (``SOPS_AGE_KEY_FILE``, ``GNUPGHOME``).
    ``root`` is the directory the project's own sources (env files, configs, secrets,
    include, extends, label files) must stay inside, symlinks resolved; None is the first
    file's directory. The agent passes its checkout, so a repository may share files.
    """

    project_name: str | None
    environ: Mapping[str, str] | None
    env_file: StrPath | None
    profiles: Sequence[str] | None
    ignore_build: bool
    keyring: Keyring | None
    root: StrPath | None


def load_project(files: Sequence[StrPath], **options: Unpack[LoadOptions]) -> Project:
    """Load, validate and normalise a Compose project.

    Warnings (unset variables, settings without effect) go to the ``gitdock.specs``
    logger. Raises SpecError with every problem found.
    """
    project, warnings, _inputs = load_project_with_inputs(files, **options)
    log_warnings(warnings)
    return project


def load_project_with_warnings(
    files: Sequence[StrPath], **options: Unpack[LoadOptions]
) -> tuple[Project, list[str]]:
    """Like ``load_project``, but returns the warnings instead of logging them."""
    project, warnings, _inputs = load_project_with_inputs(files, **options)
    return project, warnings


class LoadCrashed(PermanentError):
    """The loader itself failed on these files: a gitdock bug, but a permanent one.

    The same files fail the same way, so the agent records the revision as failed instead of
    retrying it in a loop. The message names the exception's type only: its text may quote
    the files.
    """


def load_project_with_inputs(
    files: Sequence[StrPath], **options: Unpack[LoadOptions]
) -> tuple[Project, list[str], dict[str, str]]:
    """The load itself: the project, its warnings and every file it depends on.

    ``files`` are merged in order by the Compose Specification's merge rules (``merge.py``).
    The inputs map each file read to the digest of its bytes, or "file"/"absent" where only
    its existence was checked (what ``cache.py`` compares). Raises SpecError, and
    LoadCrashed for anything else the loader raises (a bug, logged at debug level).
    """
    try:
        return _load(files, options)
    except GitdockError:
        raise
    except Exception as exc:  # a bug: permanent for these files, never a retry loop
        log.debug("the loader failed", exc_info=True)
        raise LoadCrashed(
            f"internal error while loading the Compose files ({type(exc).__name__}); "
            "this is a gitdock bug: please report it"
        ) from exc


def _load(files: Sequence[StrPath], options: LoadOptions) -> tuple[Project, list[str], dict[str, str]]:
    if not files:
        raise SpecError([SpecProblem("no Compose file given")])
    environ = options.get("environ")
    reader = Reader(
        [os.path.abspath(os.fspath(f)) for f in files],
        os.environ if environ is None else environ,
        options.get("keyring"),
        None if options.get("root") is None else os.path.abspath(os.fspath(options["root"] or "")),
    )
    env_file = options.get("env_file")
    reader.load_dotenv(None if env_file is None else os.path.abspath(os.fspath(env_file)))
    doc = reader.read_document(ignore_build=options.get("ignore_build", False))
    top, problems = check_compose(doc.data, doc)
    reader.problems += [p for p in problems if p.path not in reader.failed]
    name = choose_project_name(reader, options.get("project_name"), top, doc)
    profiles = options.get("profiles")
    if profiles is None:
        profiles = [p.strip() for p in reader.env.get("COMPOSE_PROFILES", "").split(",") if p.strip()]
    project = normalise_project(reader, name, top, doc, set(profiles))
    if reader.problems:
        raise SpecError(redact_interpolated(reader.problems, reader.interpolated))
    return project, reader.warnings, reader.inputs


def redact_interpolated(
    problems: list[SpecProblem], interpolated: Mapping[str, tuple[str, str]]
) -> list[SpecProblem]:
    """The problems with every value that came from the environment shown as written instead
    (``${DB_PASSWORD}``), for the field that was interpolated and the fields below it."""
    out = []
    for problem in problems:
        message = problem.message
        field = problem.path
        prefixes = [field[:i] for i, c in enumerate(field) if c in ".["] + [field]
        for prefix in prefixes:
            raw, value = interpolated.get(prefix, ("", ""))
            if value and value in message:
                message = message.replace(value, raw)
        out.append(dataclasses.replace(problem, message=message) if message != problem.message else problem)
    return out


def log_warnings(warnings: Sequence[str]) -> None:
    """Send a load's warnings to the ``gitdock.specs`` logger."""
    for warning in warnings:
        log.warning("%s", warning)
