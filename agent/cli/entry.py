"""The ``gitdock`` command (``[project.scripts]``, ``python -m gitdock.agent.cli``).

It starts an apply's observe (``cli.early``) before it imports the command line (``cli.main``).
"""

from __future__ import annotations

import sys

from gitdock.agent.cli.early import look_early

__all__ = ["main"]


def main() -> int:
    early = look_early(sys.argv[1:])
    from gitdock.agent.cli.main import main as run

    return run(early=early)
