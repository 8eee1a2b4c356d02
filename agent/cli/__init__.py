"""The ``gitdock`` command line (entry point ``gitdock.agent.cli.entry:main``).

``entry`` starts an apply's observe (``early``) before the rest imports; ``main`` builds the
parser and dispatches; ``compose``, ``drift``, ``trust`` and ``agent`` each hold one group of
commands; ``common`` and ``project`` what they share; ``client`` the running agent's HTTP API
(the only CLI module that imports httpx); ``progress`` the apply/down display.
"""

import sys

# httpx imports its own command line (click, rich, pygments: about 60% of httpx's import time)
# whenever those happen to be installed; gitdock never runs it. A None entry makes that import
# fail, which httpx catches (`except ImportError`), so a short command does not pay for it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # None: see above
