"""Cases found by loading real-world Compose files (awesome-compose, compose's e2e fixtures,
compose-go's loader fixtures) that gitdock refused or mishandled while Compose accepts them.

Each test is a small document written here that reproduces one case; the third-party files
themselves stay out of the repository. Pure: files only.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from gitdock.specs import load_project
from gitdock.specs.model import Project


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load(main: Path, environ: dict[str, str] | None = None) -> Project:
    return load_project([main], environ=environ or {})


def test_included_secret_environment_reads_the_include_env_file(tmp_path: Path) -> None:
    """compose-go include/secret_env: the include's env_file defines the secret's variable."""
    write(
        tmp_path / "sub" / "compose.yaml",
        """\
        services:
          consumer:
            image: alpine
            secrets: [scoped]
        secrets:
          scoped:
            environment: MY_SECRET
        """,
    )
    write(tmp_path / "secret.env", "MY_SECRET=from-the-env-file\n")
    main = write(
        tmp_path / "compose.yaml",
        """\
        include:
          - path: sub/compose.yaml
            env_file: [secret.env]
        services:
          foo:
            image: alpine
        """,
    )
    consumer = load(main).service("consumer")
    (secret,) = consumer.files
    assert (secret.name, secret.content) == ("scoped", b"from-the-env-file")
