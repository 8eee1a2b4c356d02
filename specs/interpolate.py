"""Compose variable interpolation and ``.env`` parsing.

Implements the Compose Specification's interpolation: ``$VAR``, ``${VAR}``, the
``:-`` ``-`` ``:?`` ``?`` ``:+`` ``+`` modifiers, nesting in the modifier's word, and ``$$``
as an escaped dollar. A ``$`` that starts neither a name nor ``{`` (``$(cmd)``, ``$1``,
``$@``, a trailing ``$``) stays as written, as in Compose. Words are evaluated lazily, so
``${A:-${B:?}}`` only fails when A is unset or empty.

Bounded for hostile input: a ``${`` nested more than ``MAX_NESTING`` deep in a modifier's word
is malformed, and a result longer than ``MAX_VALUE_BYTES`` (a ``.env`` whose values double
line by line) is an error, raised before the long string is built.

This module is purely computational: it reads no files and no environment on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from gitdock.specs.errors import SpecProblem

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")
# Longest first so ":-" is not read as ":" followed by "-".
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")
MAX_NESTING = 32
MAX_VALUE_BYTES = 1 << 20


class InterpolationError(ValueError):
    """A template is malformed, or a ``${VAR:?err}`` variable is missing."""


@dataclass(frozen=True)
class _Var:
    name: str
    op: str | None = None
    word: tuple[str | _Var, ...] = ()


def interpolate(template: str, environ: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """Substitute variables in ``template``.

    Returns the result and the names of variables that were unset and had no default
    (each substituted by ""). Raises InterpolationError for malformed templates and for
    ``:?``/``?`` variables that are missing.
    """
    if "$" not in template:
        return template, ()
    parts, _ = _parse(template, 0, in_braces=False)
    missing: list[str] = []
    return _evaluate(parts, environ, missing), tuple(missing)


def _invalid(template: str) -> InterpolationError:
    shown = template if len(template) <= 80 else template[:77] + "..."
    return InterpolationError(
        f'invalid interpolation format in "{shown}": you may need to escape any $ with another $'
    )


def _parse(s: str, i: int, *, in_braces: bool, depth: int = 0) -> tuple[tuple[str | _Var, ...], int]:
    """Parse from ``s[i]`` up to the end, or up to the closing ``}`` when ``in_braces``."""
    if depth > MAX_NESTING:
        raise InterpolationError(
            f"invalid interpolation format: ${{...}} nested more than {MAX_NESTING} deep"
        )
    out: list[str | _Var] = []
    buf: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == "}" and in_braces:
            break
        if c != "$":
            buf.append(c)
            i += 1
            continue
        nxt = s[i + 1] if i + 1 < n else ""
        if nxt == "$":
            buf.append("$")
            i += 2
            continue
        if nxt == "{":
            m = _NAME_RE.match(s, i + 2)
            if m is None:
                raise _invalid(s)
            i = m.end()
            op = next((o for o in _OPERATORS if s.startswith(o, i)), None)
            word: tuple[str | _Var, ...] = ()
            if op is not None:
                word, i = _parse(s, i + len(op), in_braces=True, depth=depth + 1)
            if i >= n or s[i] != "}":
                raise _invalid(s)
            i += 1
            var = _Var(m.group(), op, word)
        else:
            m = _NAME_RE.match(s, i + 1)
            if m is None:
                # "$(cmd)", "$1", "$@", a trailing "$": not a variable; Compose keeps it as written.
                buf.append("$")
                i += 1
                continue
            i = m.end()
            var = _Var(m.group())
        if buf:
            out.append("".join(buf))
            buf = []
        out.append(var)
    if in_braces and i >= n:
        raise _invalid(s)
    if buf:
        out.append("".join(buf))
    return tuple(out), i


def _evaluate(parts: tuple[str | _Var, ...], environ: Mapping[str, str], missing: list[str]) -> str:
    """The parts substituted; raises InterpolationError past MAX_VALUE_BYTES."""
    out: list[str] = []
    size = 0
    for part in parts:
        piece = part if isinstance(part, str) else _substitute(part, environ, missing)
        size += len(piece)
        if size > MAX_VALUE_BYTES:
            raise InterpolationError(
                f"the value is longer than {MAX_VALUE_BYTES >> 20} MiB once interpolated"
            )
        out.append(piece)
    return "".join(out)


def _substitute(part: _Var, environ: Mapping[str, str], missing: list[str]) -> str:
    value = environ.get(part.name)
    op = part.op
    if op is None:
        if value is None:
            missing.append(part.name)
        return value or ""
    if op == ":-":
        return value if value else _evaluate(part.word, environ, missing)
    if op == "-":
        return value if value is not None else _evaluate(part.word, environ, missing)
    if op in (":?", "?"):
        if value is None or (op == ":?" and not value):
            reason = _evaluate(part.word, environ, missing)
            message = f"required variable {part.name} is missing a value"
            raise InterpolationError(f"{message}: {reason}" if reason else message)
        return value
    if op == ":+":
        return _evaluate(part.word, environ, missing) if value else ""
    return _evaluate(part.word, environ, missing) if value is not None else ""  # "+"


@dataclass
class EnvFile:
    """The result of parsing one env file: values in file order, plus what went wrong."""

    values: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # unset variables used without default
    problems: list[SpecProblem] = field(default_factory=list)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$$"}


def parse_env_file(text: str, filename: str, environ: Mapping[str, str]) -> EnvFile:
    """Parse ``.env`` syntax.

    ``KEY=VALUE`` lines, an optional ``export`` prefix, ``#`` comments and blank lines.
    Single quotes are literal; double quotes understand ``\\n``-style escapes and may span
    lines. Unquoted and double-quoted values are interpolated, looking names up in
    ``environ`` first and then in the keys defined earlier in the file. A bare ``KEY``
    takes its value from ``environ`` and is skipped when unset there.
    """
    result = EnvFile()
    lines = text.splitlines()
    lineno = 0
    while lineno < len(lines):
        raw = lines[lineno]
        lineno += 1
        start_line = lineno
        stripped = raw.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        body = stripped
        if body.startswith("export") and body[6:7] in (" ", "\t"):
            body = body[6:].lstrip()
        # `KEY=value`, or `KEY: value` as Compose's dotenv reader also takes: the first of the two.
        key, sep, rest = body.partition("=" if ":" not in body.split("=", 1)[0] else ":")
        key = key.strip()
        column = len(raw) - len(stripped) + 1 + (len(stripped) - len(body))

        def add_problem(message: str, line: int = start_line, col: int = column) -> None:
            from gitdock.specs.model import Position  # on an error only: see specs.errors

            result.problems.append(SpecProblem(message, "", Position(filename, line, col)))

        if not _ENV_KEY_RE.fullmatch(key):
            # The line is not shown: an env file may be a secret, or not an env file at all.
            add_problem("not a KEY=VALUE line (a variable name is letters, digits and _ . -)")
        elif not sep:
            if key in environ:
                result.values[key] = environ[key]
        else:
            lineno = _parse_env_value(result, key, rest.lstrip(), lines, lineno, environ, add_problem)
    return result


def _parse_env_value(
    result: EnvFile,
    key: str,
    rest: str,
    lines: list[str],
    lineno: int,
    environ: Mapping[str, str],
    add_problem: Callable[[str], None],
) -> int:
    """Set ``key``'s value from ``rest`` (and the lines a quoted value spans); returns the
    number of the next line to read."""
    quote = rest[:1]
    if quote in ("'", '"'):
        value, lineno = _quoted_value(rest[1:], quote, lines, lineno)
        if value is None:
            add_problem(f"unterminated {quote} quote in the value of {key}")
            return lineno
        if quote == "'":
            result.values[key] = value
            return lineno
        value = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), value)
    else:
        value = re.split(r"\s#", rest, maxsplit=1)[0].rstrip()
    try:
        value, missing = interpolate(value, _ChainLookup(environ, result.values))
    except InterpolationError as exc:
        add_problem(str(exc))
        return lineno
    result.missing.extend(missing)
    result.values[key] = value
    return lineno


def _quoted_value(rest: str, quote: str, lines: list[str], lineno: int) -> tuple[str | None, int]:
    """The text up to the closing ``quote``, across lines; None when it never closes."""
    chunks: list[str] = []
    while True:
        end = _find_closing(rest, quote)
        if end >= 0:
            chunks.append(rest[:end])
            return "".join(chunks), lineno
        chunks.append(rest)
        if lineno >= len(lines):
            return None, lineno
        chunks.append("\n")
        rest = lines[lineno]
        lineno += 1


def _find_closing(s: str, quote: str) -> int:
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and quote == '"':
            i += 2
            continue
        if c == quote:
            return i
        i += 1
    return -1


class _ChainLookup(Mapping[str, str]):
    """Read-only view of several mappings; the first that has a key wins."""

    def __init__(self, *maps: Mapping[str, str]) -> None:
        self._maps = maps

    def __getitem__(self, key: str) -> str:
        for m in self._maps:
            if key in m:
                return m[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for m in self._maps:
            for k in m:
                if k not in seen:
                    seen.add(k)
                    yield k

    def __len__(self) -> int:
        return len(set().union(*self._maps))
