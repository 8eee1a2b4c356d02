"""Reading a Compose project's files into one merged document with positions.

``Reader.read_document`` reads the Compose files, interpolates them, merges them in order
(``merge.py``) and applies ``include`` and ``extends``; ``Reader.load_dotenv`` reads the
project's ``.env``. The normaliser reads env files and config and secret files through the
same Reader, so ``Reader.inputs`` holds every file the result depends on (path -> digest of
its bytes, or "file"/"absent" where only existence was checked: what ``cache.py`` compares)
and ``problems``/``warnings`` collect every problem and warning of the load.

Env files and config and secret files encrypted with SOPS are decrypted in memory as they are
read (``sops.py``; the keys through ``keyring.py``, which runs the local ``age``/``gpg``).
Their inputs are recorded as "sops:<digest>", which ``cache.py`` never stores, so no
decrypted value reaches the load cache; ``decrypted`` names them and ``secret_values`` holds
the values of decrypted env files, so the normaliser can keep them out of the clear.

Every file is read the same bounded way (``read_bytes``): only a regular file (a FIFO or a
device is refused before anything blocks), at most ``MAX_FILE_BYTES`` (``MAX_ENV_BYTES`` for env
and label files), never a path with a NUL byte or under /proc, /sys or /dev (symlinks resolved),
and, for what the project names itself (env files, configs, secrets, include, extends, label
files, the default ``.env``), never outside the project root. The files given on the command
line (``-f``, ``--env-file``) may be anywhere. Problems name the file and line, never its text.

The only I/O is reading the files named, and those two local tools: no Docker, no network.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gitdock.specs.errors import SpecProblem
from gitdock.specs.inputs import input_digest
from gitdock.specs.interpolate import EnvFile, InterpolationError, interpolate, parse_env_file
from gitdock.specs.merge import merge_documents, merge_service, resolve_markers
from gitdock.specs.model import Position
from gitdock.specs.schema import describe_value, is_path_source, suggest
from gitdock.specs.yamlpos import Document, Path, PDict, format_path, load_yaml, position_of

if TYPE_CHECKING:
    from gitdock.specs.keyring import Keyring

MAX_FILE_BYTES = 16 << 20  # a Compose, config or secret file
MAX_ENV_BYTES = 1 << 20  # an env or label file
_SMALL_FILES = frozenset({"env file", "label file"})
# Never a source, wherever a symlink points: the kernel's and the devices' trees.
_FORBIDDEN_ROOTS = ("/proc", "/sys", "/dev")


class Reader:
    """The files of one load, read once each; collects problems, warnings and inputs.

    ``root`` is the directory the project's own sources must stay in (default: the first
    file's directory); the agent passes its checkout.
    """

    def __init__(
        self,
        paths: list[str],
        environ: Mapping[str, str],
        keyring: Keyring | None = None,
        root: str | None = None,
    ) -> None:
        self.paths = paths
        self.working_dir = os.path.dirname(paths[0])
        self.root = os.path.realpath(root or self.working_dir)
        # Interpolated values, by field path: (as written, as substituted), so problems can
        # show what was written instead of a value that came from the environment.
        self.interpolated: dict[str, tuple[str, str]] = {}
        self.environ = environ
        # The project environment: the process environment over .env (see load_dotenv).
        self.env: dict[str, str] = dict(environ)
        self.inputs: dict[str, str] = {}
        # SOPS: the keys (from the environment as sops finds them, when not given), the
        # files decrypted, and the values their env files defined.
        self.keyring = keyring
        self.decrypted: set[str] = set()
        self.secret_values: set[str] = set()
        self.problems: list[SpecProblem] = []
        self.warnings: list[str] = []
        # Fields whose interpolation failed: their raw text would only add a type error.
        self.failed: set[str] = set()
        self._warned: set[str] = set()
        # Files read for extends (absolute path -> their services), each read once.
        self._extends_files: dict[str, Any] = {}
        self._extended: dict[tuple[str, str], Any] = {}
        self._including: list[str] = []
        # configs/secrets an included file defines -> the environment it was loaded with, so
        # `environment: VAR` reads the include's env_file as Compose does.
        self.object_env: dict[tuple[str, str], Mapping[str, str]] = {}

    def read_document(self, *, ignore_build: bool = False) -> Document:
        """The Compose files merged in order, with include and extends applied."""
        doc = Document(self._load_files(self.paths, None, self.env))
        doc.root = doc.data.pos if isinstance(doc.data, PDict) else None
        if ignore_build:
            _drop_build(doc.data)
        return doc

    def host_path(self, path: str) -> str:
        """A host path of the spec, absolute against the project directory."""
        return os.path.normpath(os.path.join(self.working_dir, os.path.expanduser(path)))

    def read_text(
        self,
        path: str,
        what: str,
        *,
        where: Path = (),
        position: Position | None = None,
        confined: bool = True,
    ) -> str | None:
        data = self.read_bytes(path, what, where=where, position=position, confined=confined)
        if data is None:
            return None
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            reason = f"not UTF-8 text ({exc.reason} at byte {exc.start})"
        self.problems.append(
            SpecProblem(f"{what} {path}: {reason}", format_path(where), position or Position(path, 1, 1))
        )
        return None

    def is_file(self, path: str) -> bool:
        found = os.path.isfile(path)
        self.inputs.setdefault(path, "file" if found else "absent")
        return found

    def read_bytes(
        self,
        path: str,
        what: str,
        *,
        where: Path = (),
        position: Position | None = None,
        confined: bool = True,
    ) -> bytes | None:
        """The file's bytes, or None with a problem naming it (see the module docstring)."""
        reason = self.refuse_source(path, confined=confined)
        if reason is None:
            try:
                data = read_regular_file(path, MAX_ENV_BYTES if what in _SMALL_FILES else MAX_FILE_BYTES)
            except OSError as exc:
                reason = _os_reason(exc)
            else:
                self.inputs[path] = input_digest(data)
                return data if what not in _DECRYPTED else self._decrypt(path, what, data, where, position)
        shown = path.replace("\0", "\\0")
        self.problems.append(
            SpecProblem(f"{what} {shown}: {reason}", format_path(where), position or Position(shown, 1, 1))
        )
        return None

    def refuse_source(self, path: str, *, confined: bool = True) -> str | None:
        """Why ``path`` may not be read (None when it may): a NUL byte, /proc, /sys or /dev,
        or (``confined``) a path outside the project root, symlinks resolved."""
        if "\0" in path:
            return "the path contains a NUL byte"
        real = os.path.realpath(path)
        for forbidden in _FORBIDDEN_ROOTS:
            if real == forbidden or real.startswith(forbidden + os.sep):
                return f"is under {forbidden}, which is never read"
        if confined and real != self.root and not real.startswith(self.root.rstrip(os.sep) + os.sep):
            return f"is outside the project directory {self.root}"
        return None

    def _decrypt(
        self, path: str, what: str, data: bytes, where: Path, position: Position | None
    ) -> bytes | None:
        """``data``, decrypted when it is a SOPS file; None, with a problem, when that fails.
        A file without the word ``sops`` cannot be one (every format keeps its metadata under
        that name): the SOPS code and the keyring load only for files that have it."""
        if b"sops" not in data:
            return data
        from gitdock.specs.keyring import Keyring
        from gitdock.specs.sops import SopsError, decrypt_file, detect_format

        if detect_format(path, data) is None:
            return data
        if self.keyring is None:
            self.keyring = Keyring.from_environ(os.environ)
        try:
            plain = decrypt_file(path, data, self.keyring.unwrap)
        except SopsError as exc:
            position = position or Position(path, 1, 1)
            self.problems.append(SpecProblem(f"{what} {path}: SOPS: {exc}", format_path(where), position))
            return None
        self.inputs[path] = "sops:" + self.inputs[path]
        self.decrypted.add(path)
        return plain

    def parse_env(self, text: str, path: str, environ: Mapping[str, str]) -> EnvFile:
        """``parse_env_file``, remembering the values of a decrypted file as secret."""
        parsed = parse_env_file(text, path, environ)
        if path in self.decrypted:
            self.secret_values.update(v for v in parsed.values.values() if v)
        return parsed

    def load_dotenv(self, env_file: str | None) -> None:
        path = env_file or os.path.join(self.working_dir, ".env")
        # A .env that exists but is no regular file (a FIFO, a symlink to a device) is refused.
        if env_file is None and not self.is_file(path) and not os.path.lexists(path):
            return
        text = self.read_text(path, "env file", confined=env_file is None)
        if text is None:
            return
        parsed = self.parse_env(text, path, self.environ)
        self.problems += parsed.problems
        for var in parsed.missing:
            self.warn_unset(var, f"{path}: ")
        # The process environment overrides .env.
        self.env = {**parsed.values, **self.environ}

    def warn_unset(self, var: str, where: str) -> None:
        if var not in self._warned:
            self._warned.add(var)
            self.warnings.append(f'{where}the "{var}" variable is not set, defaulting to a blank string')

    def warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.warnings.append(message)

    def _interpolator(self, env: Mapping[str, str]) -> Callable[[str, Path, Position], str]:
        def hook(value: str, path: Path, position: Position) -> str:
            try:
                result, missing = interpolate(value, env)
            except InterpolationError as exc:
                self.problems.append(SpecProblem(str(exc), format_path(path), position))
                self.failed.add(format_path(path))
                return value
            for var in missing:
                self.warn_unset(var, f"{position}: {format_path(path)}: ")
            if result != value:
                self.interpolated[format_path(path)] = (value, result)
            return result

        return hook

    def _load_file(
        self,
        path: str,
        env: Mapping[str, str],
        base_dir: str | None,
        where: Path = (),
        position: Position | None = None,
    ) -> PDict | None:
        """One Compose file as data with positions; with ``base_dir``, relative host paths
        are made absolute against it (for files included or extended from elsewhere)."""
        # Files given on the command line may be anywhere; included and extended ones may not.
        text = self.read_text(
            path, "Compose file", where=where, position=position, confined=base_dir is not None
        )
        if text is None:
            return None
        doc, problems = load_yaml(text, path, self._interpolator(env), merge_documents)
        self.problems += problems
        if problems and doc.data is None:
            return None  # a parse error; already reported
        if not isinstance(doc.data, PDict):
            got = "empty" if doc.data is None else "not a mapping"
            self.problems.append(
                SpecProblem(f"Compose file {path} is {got}", "", doc.locate(()) or Position(path, 1, 1))
            )
            return None
        if base_dir is not None and base_dir != self.working_dir:
            _absolutise(doc.data, base_dir)
        return doc.data

    def _load_files(
        self,
        paths: list[str],
        base_dir: str | None,
        env: Mapping[str, str],
        where: Path = (),
        position: Position | None = None,
    ) -> Any:
        """Merge ``paths`` in order, each with its own include applied, then apply extends
        (``where``: the include). As in Compose, a file's include is added to that file before
        the next file merges over it, so a later ``-f`` file overrides an included service."""
        merged: Any = None
        for path in paths:
            data = self._load_file(path, env, base_dir, where, position)
            if data is None:
                continue
            includes = data.pop("include", None)
            if includes is not None:
                self._include(data, includes, paths[0], env)
            merged = data if merged is None else merge_documents(merged, data)
        if merged is None:
            return PDict()
        resolve_markers(merged)
        services = merged.get("services")
        if isinstance(services, dict):
            for name in list(services):
                services[name] = self._extend(services, name, paths[0])
        return merged

    # --- include ------------------------------------------------------------------------

    def _include(self, merged: PDict, includes: Any, file: str, env: Mapping[str, str]) -> None:
        """Load each included project on its own and add its resources; a clash is a problem."""
        position = merged.kpos.get("include") or Position(file, 1, 1)
        if not isinstance(includes, list):
            self.problems.append(SpecProblem("expected a list of files or mappings", "include", position))
            return
        for i, entry in enumerate(includes):
            where: Path = ("include", i)
            item_pos = position_of(includes, i) or position
            spec = self._include_entry(entry, where, item_pos, os.path.dirname(file))
            if spec is None:
                continue
            paths, project_dir, env_files = spec
            if any(p in self._including for p in paths):
                message = "include cycle: " + " -> ".join([*self._including, paths[0]])
                self.problems.append(SpecProblem(message, format_path(where), item_pos))
                continue
            sub_env = self._include_env(env, env_files, where, item_pos)
            self._including.append(paths[0])
            try:
                sub = self._load_files(paths, project_dir, sub_env, where, item_pos)
            finally:
                self._including.pop()
            self._add_included(merged, sub, paths[0], item_pos)
            for section in ("configs", "secrets"):
                objects = sub.get(section) if isinstance(sub, dict) else None
                for key in objects if isinstance(objects, dict) else ():
                    self.object_env.setdefault((section, key), sub_env)

    def _include_env(
        self, env: Mapping[str, str], env_files: list[str], where: Path, position: Position
    ) -> dict[str, str]:
        """The environment an included project is interpolated with: its own env files,
        merged in order (a later file wins), under the process environment."""
        if not env_files:
            return dict(env)
        values: dict[str, str] = {}
        for env_path in env_files:
            text = self.read_text(env_path, "env file", where=where, position=position)
            if text is not None:
                parsed = self.parse_env(text, env_path, {**values, **self.environ})
                self.problems += parsed.problems
                values.update(parsed.values)
        return {**values, **self.environ}

    def _add_included(self, merged: PDict, sub: Any, file: str, position: Position) -> None:
        """Add an included project's resources; one already defined here is a problem, and so
        is a top-level key the included file may not have (the others are dropped here)."""
        for key in sub if isinstance(sub, dict) else ():
            if key not in _INCLUDED_KEYS and not key.startswith("x-"):
                where = position_of(sub, key, key=True) or position
                hint = suggest(key, _INCLUDED_KEYS)
                self.problems.append(SpecProblem(f"unknown top-level key `{key}`{hint}", key, where))
        for section in ("services", "networks", "volumes", "configs", "secrets"):
            theirs = sub.get(section)
            if not isinstance(theirs, dict):
                continue
            ours = merged.get(section)
            if not isinstance(ours, PDict):
                ours = PDict(position)
                merged.put(section, ours, position, position)
            for key, value in theirs.items():
                if key in ours:
                    self.problems.append(
                        SpecProblem(
                            f"{section[:-1]} {key} is defined here and in the included file {file}",
                            format_path((section, key)),
                            position_of(ours, key, key=True) or position,
                        )
                    )
                    continue
                ours.put(key, value, position_of(theirs, key, key=True), position_of(theirs, key))

    def _include_entry(
        self, entry: Any, where: Path, position: Position, base_dir: str
    ) -> tuple[list[str], str, list[str]] | None:
        def bad(message: str) -> None:
            self.problems.append(SpecProblem(message, format_path(where), position))

        paths: Any
        env_files: Any
        project_dir: Any
        if isinstance(entry, str):
            paths, project_dir, env_files = [entry], None, []
        elif isinstance(entry, dict):
            unknown = sorted(set(entry) - {"path", "project_directory", "env_file"})
            if unknown:
                bad(f"unknown key `{unknown[0]}` (include takes path, project_directory, env_file)")
                return None
            raw_paths = entry.get("path")
            paths = [raw_paths] if isinstance(raw_paths, str) else raw_paths
            project_dir = entry.get("project_directory")
            raw_env = entry.get("env_file", [])
            env_files = [raw_env] if isinstance(raw_env, str) else raw_env
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
                bad("include needs `path`: a file or a list of files")
                return None
            if not isinstance(env_files, list) or not all(isinstance(p, str) for p in env_files):
                bad("env_file must be a path or a list of paths")
                return None
            if project_dir is not None and not isinstance(project_dir, str):
                bad("project_directory must be a path")
                return None
        else:
            bad(f"expected a file or a mapping, got {describe_value(entry)}")
            return None
        abs_paths = [os.path.normpath(os.path.join(base_dir, os.path.expanduser(p))) for p in paths]
        directory = (
            os.path.normpath(os.path.join(base_dir, project_dir))
            if project_dir
            else os.path.dirname(abs_paths[0])
        )
        # As in Compose: env_file paths are relative to the including file, not the included one.
        abs_env = [os.path.normpath(os.path.join(base_dir, p)) for p in env_files]
        if not env_files and self.is_file(os.path.join(directory, ".env")):
            abs_env = [os.path.join(directory, ".env")]
        return abs_paths, directory, abs_env

    # --- extends ------------------------------------------------------------------------

    def _extend(self, services: dict[str, Any], name: str, file: str) -> Any:
        """The service with its ``extends`` chain merged in (the Specification's merge rules).

        Iterative: the chain is walked down to its base, then merged back up, so a chain of
        thousands of services costs no recursion. Each service is resolved once.
        """
        chain: list[tuple[tuple[str, str], PDict]] = []
        result: Any = _BROKEN
        while True:
            svc, key = services.get(name), (file, name)
            if not isinstance(svc, PDict) or "extends" not in svc:
                result = svc
                break
            if key in self._extended:
                result = self._extended[key]
                break
            local = PDict(svc.pos)
            for k, v in svc.items():
                if k != "extends":
                    local.put(k, v, svc.kpos.get(k), svc.vpos.get(k))
            base = self._extends_base(services, svc, key, [k for k, _ in chain])
            chain.append((key, local))
            if base is None:
                break
            services, name, file = base
        for key, local in reversed(chain):
            result = local if result is _BROKEN else merge_service(result, local)
            self._extended[key] = result
        return result

    def _extends_base(
        self, services: dict[str, Any], svc: PDict, key: tuple[str, str], stack: list[tuple[str, str]]
    ) -> tuple[dict[str, Any], str, str] | None:
        """The services, name and file ``svc`` extends; None, with a problem, when it cannot."""
        file, name = key
        where: Path = ("services", name, "extends")
        position = svc.kpos.get("extends") or svc.pos
        ref = self._extends_ref(svc["extends"], where, position, file)
        if ref is None:
            return None
        base_name, base_file = ref
        target = (base_file, base_name)
        if target in stack or target == key:
            cycle = [*stack[stack.index(target) :], key] if target in stack else [key]
            chain = " -> ".join(n for _, n in (*cycle, target))
            self.problems.append(SpecProblem(f"extends cycle: {chain}", format_path(where), position))
            return None
        base_services = services if base_file == file else self._extends_services(base_file, where, position)
        if base_services is None:
            return None
        if base_name not in base_services:
            in_file = "" if base_file == file else f" in {base_file}"
            hint = suggest(base_name, base_services)
            self.problems.append(
                SpecProblem(
                    f'extends undefined service "{base_name}"{in_file}{hint}', format_path(where), position
                )
            )
            return None
        return base_services, base_name, base_file

    def _extends_ref(
        self, value: Any, where: Path, position: Position | None, file: str
    ) -> tuple[str, str] | None:
        if isinstance(value, str):
            return value, file
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"service", "file"})
            service, other = value.get("service"), value.get("file")
            if unknown:
                message = f"unknown key `{unknown[0]}` (extends takes service and file)"
            elif not isinstance(service, str):
                message = "extends needs `service`: the name of the service to extend"
            elif other is not None and not isinstance(other, str):
                message = "extends.file must be a path"
            else:
                return service, _absolute(other, os.path.dirname(file)) if other else file
        else:
            message = f"expected a service name or a mapping, got {describe_value(value)}"
        self.problems.append(SpecProblem(message, format_path(where), position))
        return None

    def _extends_services(self, path: str, where: Path, position: Position | None) -> Any:
        if path not in self._extends_files:
            if not self.is_file(path) and not os.path.lexists(path):
                self.problems.append(
                    SpecProblem(f"extends file {path}: not found", format_path(where), position)
                )
                self._extends_files[path] = None
            else:
                data = self._load_file(path, self.env, os.path.dirname(path), where, position)
                services = data.get("services") if data is not None else None
                if data is not None:
                    resolve_markers(data)
                # A base file that could not be read is reported once, not again as "undefined".
                empty = PDict() if data is not None else None
                self._extends_files[path] = services if isinstance(services, dict) else empty
        return self._extends_files[path]


def read_regular_file(path: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; OSError otherwise.

    Opened non-blocking, so a FIFO answers at once (and is refused with a device by fstat);
    at most ``limit + 1`` bytes are read even if the file grows meanwhile.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(info.st_mode):
            raise _NotRegular(path)
        if info.st_size > limit:
            raise _TooLarge(limit)
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, min(1 << 20, limit + 1 - size))):
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise _TooLarge(limit)
    return b"".join(chunks)


class _NotRegular(OSError):
    """A FIFO, socket or device: never read."""


class _TooLarge(OSError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"larger than {limit >> 20} MiB")
        self.limit = limit


def _os_reason(exc: OSError) -> str:
    """Why a file could not be read, in a few words (never its text)."""
    if isinstance(exc, _TooLarge):
        return f"larger than the {exc.limit >> 20} MiB a file may be"
    if isinstance(exc, _NotRegular):
        return "not a regular file (a FIFO, socket or device is never read)"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return exc.strerror or type(exc).__name__


# What an included file may have at its top (``include`` itself is applied before this).
_INCLUDED_KEYS = ("name", "version", "services", "networks", "volumes", "configs", "secrets", "models")
_BROKEN = object()  # an extends chain that could not be followed: its service stays as written

# What ``read_bytes`` decrypts when it is SOPS-encrypted (Compose files themselves are not).
_DECRYPTED = frozenset({"env file", "config file", "secret file"})


def _drop_build(data: Any) -> None:
    """``ignore_build``: a service that names an image is deployed from it; build is dropped."""
    services = data.get("services") if isinstance(data, dict) else None
    if isinstance(services, dict):
        for svc in services.values():
            if isinstance(svc, dict) and "build" in svc and svc.get("image"):
                del svc["build"]


def _absolute(path: str, base_dir: str) -> str:
    if path.startswith("~") or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base_dir, path))


def _absolutise(data: PDict, base_dir: str) -> None:
    """Make a file's relative host paths absolute against ``base_dir`` (in place), so they
    keep their meaning when the file's services are included or extended elsewhere."""
    for section in ("configs", "secrets"):
        objects = data.get(section)
        if isinstance(objects, dict):
            for obj in objects.values():
                if isinstance(obj, dict) and isinstance(obj.get("file"), str):
                    obj["file"] = _absolute(obj["file"], base_dir)
    services = data.get("services")
    if not isinstance(services, dict):
        return
    for svc in services.values():
        if not isinstance(svc, dict):
            continue
        volumes = svc.get("volumes")
        if isinstance(volumes, list):
            for i, vol in enumerate(volumes):
                if isinstance(vol, str):
                    source, sep, rest = vol.partition(":")
                    if sep and is_path_source(source):
                        volumes[i] = f"{_absolute(source, base_dir)}:{rest}"
                elif (
                    isinstance(vol, dict) and vol.get("type") == "bind" and isinstance(vol.get("source"), str)
                ):
                    vol["source"] = _absolute(vol["source"], base_dir)
        env_file = svc.get("env_file")
        if isinstance(env_file, str):
            svc["env_file"] = _absolute(env_file, base_dir)
        elif isinstance(env_file, list):
            for i, entry in enumerate(env_file):
                if isinstance(entry, str):
                    env_file[i] = _absolute(entry, base_dir)
                elif isinstance(entry, dict) and isinstance(entry.get("path"), str):
                    entry["path"] = _absolute(entry["path"], base_dir)
        extends = svc.get("extends")
        if isinstance(extends, dict) and isinstance(extends.get("file"), str):
            extends["file"] = _absolute(extends["file"], base_dir)
        _absolutise_build(svc, base_dir)


def _absolutise_build(svc: dict[str, Any], base_dir: str) -> None:
    """A build context is relative to the file that declares it; remote contexts stay as they are."""
    build = svc.get("build")
    if isinstance(build, str) and "://" not in build:
        svc["build"] = _absolute(build, base_dir)
    elif isinstance(build, dict) and isinstance(build.get("context"), str) and "://" not in build["context"]:
        build["context"] = _absolute(build["context"], base_dir)
