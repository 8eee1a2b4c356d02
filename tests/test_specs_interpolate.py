"""Compose interpolation and .env parsing: pure functions, table-driven."""

from __future__ import annotations

import pytest

from gitdock.specs import InterpolationError, interpolate, parse_env_file

ENV = {"SET": "value", "EMPTY": "", "OTHER": "other"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("$SET", "value"),
        ("${SET}", "value"),
        ("pre-${SET}-post", "pre-value-post"),
        ("$SET/$OTHER", "value/other"),
        ("${UNSET:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${SET:-default}", "value"),
        ("${UNSET-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${UNSET:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${SET:?must be set}", "value"),
        ("${EMPTY?must be set}", ""),
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        ("cost: 5$$", "cost: 5$"),
        ("${UNSET:-${OTHER}}", "other"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${UNSET:-a $SET b}", "a value b"),
        ("${UNSET:-with:colon}", "with:colon"),
        ("${SET:-${UNSET:?not evaluated}}", "value"),
        ("}{", "}{"),
    ],
)
def test_interpolate_substitutes(template: str, expected: str) -> None:
    assert interpolate(template, ENV) == (expected, ())


@pytest.mark.parametrize(
    ("template", "missing"),
    [
        ("$UNSET", ("UNSET",)),
        ("${UNSET}", ("UNSET",)),
        ("$A-$B", ("A", "B")),
        ("${SET:+$UNSET}", ("UNSET",)),
    ],
)
def test_interpolate_reports_unset_variables_and_substitutes_blank(
    template: str, missing: tuple[str, ...]
) -> None:
    value, unset = interpolate(template, ENV)
    assert unset == missing
    assert "UNSET" not in value


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${UNSET:?set it please}", "required variable UNSET is missing a value: set it please"),
        ("${EMPTY:?}", "required variable EMPTY is missing a value"),
        ("${UNSET?}", "required variable UNSET is missing a value"),
        ("${UNSET:?need $SET}", "required variable UNSET is missing a value: need value"),
        ("${UNSET:-${NESTED:?inner}}", "required variable NESTED is missing a value: inner"),
    ],
)
def test_interpolate_raises_for_required_variables(template: str, message: str) -> None:
    with pytest.raises(InterpolationError) as exc:
        interpolate(template, ENV)
    assert str(exc.value) == message


@pytest.mark.parametrize("template", ["${", "${SET", "${}", "${1A}", "${SET!x}", "${UNSET:-x"])
def test_interpolate_rejects_malformed_templates(template: str) -> None:
    with pytest.raises(InterpolationError, match="invalid interpolation format"):
        interpolate(template, ENV)


@pytest.mark.parametrize(
    "template", ["a$", "$ x", "$-", "$(date)", "echo $1 $@", "cost: 5$", "$(cmd) ${SET}"]
)
def test_interpolate_keeps_a_dollar_that_starts_no_variable_as_compose_does(template: str) -> None:
    result, missing = interpolate(template, ENV)
    assert result == template.replace("${SET}", ENV["SET"])
    assert missing == ()


def env(text: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    parsed = parse_env_file(text, ".env", environ or {})
    assert parsed.problems == []
    return parsed.values


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A=1", {"A": "1"}),
        ("A = 1 ", {"A": "1"}),
        ("A=", {"A": ""}),
        ("export A=1", {"A": "1"}),
        ("# comment\n\n   \nA=1\n# another", {"A": "1"}),
        ("A=plain # trailing comment", {"A": "plain"}),
        ("A=no#comment", {"A": "no#comment"}),
        ("A='single $B \\n'", {"A": "single $B \\n"}),
        ('A="double\\nline\\t\\"q\\""', {"A": 'double\nline\t"q"'}),
        ('A="multi\nline"', {"A": "multi\nline"}),
        ("A='multi\nline'", {"A": "multi\nline"}),
        ('A="x" # comment', {"A": "x"}),
        ("A=1\nB=${A}2", {"A": "1", "B": "12"}),
        ('A=1\nB="$A"', {"A": "1", "B": "1"}),
        ("A=1\nA=2", {"A": "2"}),
        ("A=x=y", {"A": "x=y"}),
        ('A="cost \\$5"', {"A": "cost $5"}),
        ("A=$$", {"A": "$"}),
    ],
)
def test_parse_env_file(text: str, expected: dict[str, str]) -> None:
    assert env(text) == expected


def test_parse_env_file_bare_key_takes_value_from_environ() -> None:
    assert env("FROM_ENV\nNOT_THERE", {"FROM_ENV": "x"}) == {"FROM_ENV": "x"}


def test_parse_env_file_interpolation_prefers_environ_over_earlier_keys() -> None:
    assert env("A=file\nB=$A", {"A": "environ"}) == {"A": "file", "B": "environ"}


def test_parse_env_file_records_unset_variables() -> None:
    parsed = parse_env_file("A=$NOPE", ".env", {})
    assert parsed.values == {"A": ""}
    assert parsed.missing == ["NOPE"]


def test_parse_env_file_reports_bad_lines_with_position() -> None:
    parsed = parse_env_file("OK=1\n  1BAD=2\nC='open\n", "/p/.env", {})
    assert [str(p) for p in parsed.problems] == [
        "/p/.env:2:3: not a KEY=VALUE line (a variable name is letters, digits and _ . -)",
        "/p/.env:3:1: unterminated ' quote in the value of C",
    ]
    assert parsed.values == {"OK": "1"}
