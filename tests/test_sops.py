"""specs.sops and specs.keyring: SOPS files decrypt in memory, their MAC is checked.

Real-sops vectors (../shared/vectors/sops, PGP test key) prove the reader; age vectors are
made here with Debian's ``age-keygen``/``age`` and the format helper in support/sops.py, which
is itself checked token for token against what the real sops wrote.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from gitdock.runtime.desired import desired_container
from gitdock.runtime.drift.detect import detect_drift
from gitdock.runtime.observe import ObservedContainer, ObservedState
from gitdock.runtime.record import env_digest, record_applied
from gitdock.specs import SpecError
from gitdock.specs.cache import load_project_cached
from gitdock.specs.keyring import Keyring
from gitdock.specs.load import load_project
from gitdock.specs.sops import (
    KeyStanza,
    SopsError,
    SopsFormat,
    decrypt_file,
    decrypt_value,
    detect_format,
    to_bytes,
    unflatten_metadata,
)
from support.sops import LASTMODIFIED, age_keygen, encrypt_document, encrypt_value

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "sops"
FUNCTIONAL = VECTORS / "functional-tests"


@pytest.fixture(scope="module")
def gnupghome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away GnuPG home holding sops' PGP test keys; its gpg-agent is stopped after."""
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    key = VECTORS / "pgp" / "sops_functional_tests_key.asc"
    subprocess.run(
        ["gpg", "--batch", "--quiet", "--import", str(key)], env=env, check=True, capture_output=True
    )
    yield str(home)
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False, capture_output=True)


@pytest.fixture(scope="module")
def age_key() -> tuple[str, str]:
    return age_keygen()


def pgp_keyring(gnupghome: str) -> Keyring:
    return Keyring(gnupghome=gnupghome)


def decrypt_path(path: Path, keyring: Keyring) -> bytes:
    return decrypt_file(path.name, path.read_bytes(), keyring.unwrap)


# --- the real sops' vectors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt", "plain"),
    [
        ("format.enc.yaml", SopsFormat.YAML, b"foo: bar\n"),
        ("format.enc.json", SopsFormat.JSON, b'{\n    "foo": "bar"\n}\n'),
        ("format.enc.ini", SopsFormat.INI, b"[foo]\nbar = baz\n"),
        ("format-2.enc.ini", SopsFormat.INI, b"[foo]\nbar = baz\n"),
        ("format.enc.env", SopsFormat.DOTENV, b"foo = bar\n"),
        ("multiple_keys.yaml", SopsFormat.YAML, b"message: hello\n"),
        ("comments.enc.yaml", SopsFormat.YAML, b"lorem: ipsum\ndolor: sit\n"),
    ],
)
def test_real_sops_functional_vectors_decrypt_with_the_pgp_key(
    gnupghome: str, name: str, fmt: SopsFormat, plain: bytes
) -> None:
    path = FUNCTIONAL / name
    assert detect_format(path.name, path.read_bytes()) is fmt
    assert decrypt_path(path, pgp_keyring(gnupghome)) == plain


def test_real_sops_example_yaml_decrypts_every_type(gnupghome: str) -> None:
    doc = yaml.safe_load(decrypt_path(VECTORS / "example.yaml", pgp_keyring(gnupghome)))
    assert doc["myapp1"] == "t00m4nys3cr3tzupdated"
    assert doc["app2"]["db"] == {"user": "eve", "password": "c4r1b0u"}
    assert doc["this"]["is"]["a"]["nested"]["value"] == "with something secret in it"
    assert doc["an_array"][:2] == ["secretuser1", "secretuser2"]
    assert (doc["somebooleans"], doc["number"]) == ([True, False], 1234568000.0)


def test_real_sops_example_json_ini_and_binary_decrypt(gnupghome: str) -> None:
    keyring = pgp_keyring(gnupghome)
    as_json = json.loads(decrypt_path(VECTORS / "example.json", keyring))
    assert (as_json["firstName"], as_json["age"]) == ("John", 25.4)
    as_ini = decrypt_path(VECTORS / "example.ini", keyring).decode()
    assert "firstName = John" in as_ini and "notsecret_unencrypted = hi there!" in as_ini
    assert decrypt_path(VECTORS / "example.txt", keyring).startswith(b"Welcome to SOPS!\n")


def test_a_file_without_a_mac_is_refused(gnupghome: str) -> None:
    with pytest.raises(SopsError, match="has no MAC"):
        decrypt_path(FUNCTIONAL / "no_mac.yaml", pgp_keyring(gnupghome))


def test_plain_files_are_not_sops_files() -> None:
    for name in ("plainfile.yaml", "comments.yaml", "comments_list.yaml"):
        path = FUNCTIONAL / name
        assert detect_format(name, path.read_bytes()) is None
    assert detect_format(".env", b"SOPS_HOME=/x\nA=sops\n") is None
    assert detect_format("c.yaml", b"sops: 1\n") is None


def test_helper_encryption_matches_the_real_sops_token_for_token(gnupghome: str) -> None:
    """With sops' data key and IVs, the test helper writes exactly the tokens sops wrote."""
    doc = json.loads((VECTORS / "example.json").read_text())
    enc = next(k["enc"] for k in doc["sops"]["pgp"] if k["fp"].startswith("FBC7"))
    data_key = pgp_keyring(gnupghome).unwrap([_stanza("pgp", enc)])
    plain = json.loads(decrypt_path(VECTORS / "example.json", pgp_keyring(gnupghome)))
    assert (
        encrypt_value(plain["firstName"], data_key, "firstName:", _iv(doc["firstName"])) == doc["firstName"]
    )
    assert encrypt_value(plain["age"], data_key, "age:", _iv(doc["age"])) == doc["age"]
    city = doc["address"]["city"]
    assert encrypt_value(plain["address"]["city"], data_key, "address:city:", _iv(city)) == city
    # The MAC: recomputed over the plaintext and sealed with lastmodified as additional data.
    mac = decrypt_value(doc["sops"]["mac"], data_key, doc["sops"]["lastmodified"])
    sealed = encrypt_value(mac, data_key, doc["sops"]["lastmodified"], _iv(doc["sops"]["mac"]))
    assert sealed == doc["sops"]["mac"]


def _iv(token: str) -> bytes:
    match = re.search(r",iv:([^,]+),", token)
    assert match is not None
    return base64.b64decode(match.group(1))


def _stanza(kind: str, enc: str) -> KeyStanza:
    return KeyStanza(kind, "", enc)


# --- age, through Debian's age binary --------------------------------------------------------

DOC = {"db": {"user": "app", "password": "s3cr3t-Pa55"}, "port": 5432, "ratio": 0.25, "on": True}


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_age_encrypted_trees_round_trip(age_key: tuple[str, str], fmt: str) -> None:
    identity, recipient = age_key
    data = encrypt_document({**DOC, "note_unencrypted": "in the clear"}, fmt, recipient)
    assert b"s3cr3t-Pa55" not in data and b"in the clear" in data
    plain = decrypt_file(f"app.{fmt}", data, Keyring(age_identities=identity).unwrap)
    loaded = yaml.safe_load(plain) if fmt == "yaml" else json.loads(plain)
    assert loaded == {**DOC, "note_unencrypted": "in the clear"}


def test_age_encrypted_dotenv_ini_and_binary_round_trip(age_key: tuple[str, str]) -> None:
    identity, recipient = age_key
    unwrap = Keyring(age_identities=identity).unwrap
    dotenv = encrypt_document({"DB_PASSWORD": "s3cr3t", "MODE": "prod"}, "dotenv", recipient)
    assert detect_format(".env", dotenv) is SopsFormat.DOTENV
    assert decrypt_file(".env", dotenv, unwrap) == b"DB_PASSWORD=s3cr3t\nMODE=prod\n"
    ini = encrypt_document({"db": {"password": "s3cr3t"}}, "ini", recipient)
    assert decrypt_file("app.ini", ini, unwrap) == b"[db]\npassword = s3cr3t\n"
    binary = encrypt_document({"data": "line one\nline two\n"}, "binary", recipient)
    assert detect_format("token.txt", binary) is SopsFormat.BINARY
    assert decrypt_file("token.txt", binary, unwrap) == b"line one\nline two\n"


def test_a_wrong_age_identity_opens_nothing(age_key: tuple[str, str]) -> None:
    data = encrypt_document(DOC, "yaml", age_key[1])
    other_identity, _ = age_keygen()
    with pytest.raises(SopsError, match="no key opens the data key") as info:
        decrypt_file("app.yaml", data, Keyring(age_identities=other_identity).unwrap)
    assert "AGE-SECRET-KEY" not in str(info.value)


def test_no_identity_at_all_says_where_keys_come_from(age_key: tuple[str, str]) -> None:
    data = encrypt_document(DOC, "yaml", age_key[1])
    with pytest.raises(SopsError, match="SOPS_AGE_KEY_FILE"):
        decrypt_file("app.yaml", data, Keyring().unwrap)


def test_an_age_helper_file_without_mac_is_refused(age_key: tuple[str, str]) -> None:
    data = encrypt_document(DOC, "yaml", age_key[1], with_mac=False)
    with pytest.raises(SopsError, match="has no MAC"):
        decrypt_file("app.yaml", data, Keyring(age_identities=age_key[0]).unwrap)


# --- tampering -----------------------------------------------------------------------------


def tamper(data: bytes, old: bytes, new: bytes) -> bytes:
    assert data.count(old) == 1, "the mutation must hit exactly one place"
    changed = data.replace(old, new)
    assert changed != data
    return changed


def test_a_changed_unencrypted_value_breaks_the_mac(age_key: tuple[str, str]) -> None:
    data = encrypt_document({"a": "1", "b_unencrypted": "public"}, "yaml", age_key[1])
    bad = tamper(data, b"b_unencrypted: public", b"b_unencrypted: changed")
    with pytest.raises(SopsError, match="MAC mismatch"):
        decrypt_file("app.yaml", bad, Keyring(age_identities=age_key[0]).unwrap)


def test_a_removed_value_breaks_the_mac(age_key: tuple[str, str]) -> None:
    data = encrypt_document({"a": "one", "b": "two"}, "json", age_key[1])
    doc = json.loads(data)
    del doc["b"]
    bad = json.dumps(doc).encode()
    assert b'"b"' not in bad and b'"b"' in data
    with pytest.raises(SopsError, match="MAC mismatch"):
        decrypt_file("app.json", bad, Keyring(age_identities=age_key[0]).unwrap)


def test_a_value_moved_to_another_key_does_not_decrypt(age_key: tuple[str, str]) -> None:
    data = encrypt_document({"a": "one", "b": "two"}, "json", age_key[1])
    doc = json.loads(data)
    doc["a"], doc["b"] = doc["b"], doc["a"]
    bad = json.dumps(doc).encode()
    assert bad != data
    with pytest.raises(SopsError, match="does not decrypt") as info:
        decrypt_file("app.json", bad, Keyring(age_identities=age_key[0]).unwrap)
    assert "one" not in str(info.value) and "two" not in str(info.value)


def test_a_flipped_ciphertext_bit_does_not_decrypt(gnupghome: str) -> None:
    data = (FUNCTIONAL / "format.enc.json").read_bytes()
    bad = tamper(data, b"data:fvD/,", b"data:fvD+,")
    with pytest.raises(SopsError, match="does not decrypt"):
        decrypt_file("format.enc.json", bad, pgp_keyring(gnupghome).unwrap)


# --- pure parts ----------------------------------------------------------------------------


def test_values_feed_the_mac_as_go_prints_them() -> None:
    assert [to_bytes(v) for v in (True, False, 3, 0.1, 1.0, 1e21, 25.4)] == [
        b"True",
        b"False",
        b"3",
        b"0.1",
        b"1",
        b"1000000000000000000000",
        b"25.4",
    ]


def test_flattened_metadata_unflattens() -> None:
    flat = {
        "pgp__list_0__map_fp": "AB",
        "pgp__list_0__map_enc": "x\\ny",
        "pgp__list_1__map_fp": "CD",
        "version": "3.9.0",
    }
    assert unflatten_metadata(flat) == {
        "pgp": [{"fp": "AB", "enc": "x\ny"}, {"fp": "CD"}],
        "version": "3.9.0",
    }


def test_the_environment_finds_keys_as_sops_does(tmp_path: Path, age_key: tuple[str, str]) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text(age_key[0])
    ring = Keyring.from_environ({"SOPS_AGE_KEY_FILE": str(key_file), "GNUPGHOME": "/g"})
    assert ring.age_identities.strip() == age_key[0].strip() and ring.gnupghome == "/g"
    assert Keyring.from_environ(
        {"SOPS_AGE_KEY": "AGE-SECRET-KEY-1X", "HOME": str(tmp_path)}
    ).age_identities == ("AGE-SECRET-KEY-1X")
    assert "AGE-SECRET-KEY" not in repr(ring)
    missing = Keyring.from_environ({"SOPS_AGE_KEY_FILE": str(tmp_path / "absent.txt")})
    with pytest.raises(SopsError, match=r"cannot read SOPS_AGE_KEY_FILE .*absent.txt: No such file"):
        missing.unwrap([KeyStanza("age", "age1x", "-----BEGIN AGE ENCRYPTED FILE-----")])


# --- the loader ------------------------------------------------------------------------------

SECRET = "s3cr3t-Pa55-9f41"


@pytest.fixture
def sops_project(tmp_path: Path, age_key: tuple[str, str]) -> Path:
    """A project whose .env, env_file and secret file are SOPS-encrypted to ``age_key``."""
    recipient = age_key[1]
    app = tmp_path / "app"
    app.mkdir()
    (app / ".env").write_bytes(encrypt_document({"DB_PASSWORD": SECRET, "TAG": "1"}, "dotenv", recipient))
    (app / "web.env").write_bytes(encrypt_document({"API_TOKEN": f"tok-{SECRET}"}, "dotenv", recipient))
    (app / "db_password.txt").write_bytes(encrypt_document({"data": SECRET}, "binary", recipient))
    (app / "compose.yaml").write_text(
        "services:\n"
        "  web:\n"
        "    image: busybox:${TAG}\n"
        "    env_file: web.env\n"
        "    environment:\n"
        "      DB_PASSWORD: ${DB_PASSWORD}\n"
        "      PLAIN: hello\n"
        "    secrets: [db_password]\n"
        "secrets:\n"
        "  db_password:\n"
        "    file: ./db_password.txt\n"
    )
    return app


def test_the_loader_decrypts_env_files_and_secrets_in_memory(
    sops_project: Path, age_key: tuple[str, str]
) -> None:
    project = load_project(
        [sops_project / "compose.yaml"], environ={}, keyring=Keyring(age_identities=age_key[0])
    )
    web = project.services[0]
    env = dict(web.environment)
    assert web.image == "busybox:1"
    assert (env["DB_PASSWORD"], env["API_TOKEN"], env["PLAIN"]) == (SECRET, f"tok-{SECRET}", "hello")
    assert web.secret_env == ("API_TOKEN", "DB_PASSWORD")
    (secret,) = web.files
    # Copied into the container like inline content: no host file holds the plaintext.
    assert (secret.content, secret.source) == (SECRET.encode(), "")


def test_a_decrypted_load_is_never_cached(
    sops_project: Path, tmp_path: Path, age_key: tuple[str, str]
) -> None:
    cache = tmp_path / "state" / "load-cache"
    keyring = Keyring(age_identities=age_key[0])
    for _ in range(2):
        project = load_project_cached([sops_project / "compose.yaml"], cache, environ={}, keyring=keyring)
        assert dict(project.services[0].environment)["DB_PASSWORD"] == SECRET
    assert not list(cache.glob("*.pickle"))
    for path in tmp_path.joinpath("state").rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes()


def test_a_bad_mac_is_one_line_naming_the_file_and_no_value(
    sops_project: Path, age_key: tuple[str, str]
) -> None:
    env_file = sops_project / "web.env"
    data = env_file.read_bytes()
    env_file.write_bytes(data.replace(b"sops_lastmodified=2026", b"sops_lastmodified=2025"))
    assert env_file.read_bytes() != data
    with pytest.raises(SpecError) as info:
        load_project([sops_project / "compose.yaml"], environ={}, keyring=Keyring(age_identities=age_key[0]))
    message = str(info.value)
    assert f"env file {env_file}: SOPS:" in message and "\n" not in message
    assert SECRET not in message


def test_without_keys_the_load_says_which_file_and_why(sops_project: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_project([sops_project / "compose.yaml"], environ={}, keyring=Keyring())
    assert "no key opens the data key" in str(info.value)
    assert str(sops_project / ".env") in str(info.value)
    assert LASTMODIFIED not in str(info.value)


# --- the applied record and drift ----------------------------------------------------------


def test_the_applied_record_keeps_only_a_digest_of_a_sops_value(
    sops_project: Path, age_key: tuple[str, str]
) -> None:
    project = load_project(
        [sops_project / "compose.yaml"], environ={}, keyring=Keyring(age_identities=age_key[0])
    )
    dc = desired_container(project, project.services[0], 1)
    assert dc.secret_env == {"API_TOKEN", "DB_PASSWORD"}
    container = ObservedContainer(dc.name, dc.name, dc.image, "sha256:" + "a" * 64, "running", "Up", {}, {})
    after = ObservedState(containers=(container,), networks=(), volumes=())
    applied = record_applied(project.name, [dc], [], [], after, applied_at=0.0)
    text = applied.to_json()
    assert SECRET not in text and "PLAIN=hello" in text
    assert f"DB_PASSWORD={env_digest(SECRET)}" in applied.containers[0].env


def test_drift_compares_a_recorded_digest_and_never_shows_the_value() -> None:
    from test_drift import NOW, applied, inspect_of, live, observed, only, record

    rc = applied(env=("GREETING=hi", f"MOTTO={env_digest('keep-calm')}"))
    same = {**inspect_of(rc), "Config": {"Env": ["GREETING=hi", "MOTTO=keep-calm"]}}
    assert not detect_drift(record(rc), observed(live(rc)), {rc.id: same}, now=NOW).items
    changed = {**inspect_of(rc), "Config": {"Env": ["GREETING=hi", "MOTTO=carry-on"]}}
    report = detect_drift(record(rc), observed(live(rc)), {rc.id: changed}, now=NOW)
    item = only(report)
    assert (item["field"], item["desired"], item["live"]) == (
        "environment",
        "MOTTO=<redacted>",
        "MOTTO=<redacted>",
    )
    rendered = report.to_json() + report.render_text() + report.render_markdown()
    assert "carry-on" not in rendered and "keep-calm" not in rendered
