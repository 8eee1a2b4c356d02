"""``python -m gitdock.agent.cli``: the same as the ``gitdock`` command."""

import sys

from gitdock.agent.cli.entry import main

sys.exit(main())
