"""The ``gitdock`` command line (entry point ``gitdock.agent.cli.main:main``).

``main`` builds the parser and dispatches; ``compose``, ``drift``, ``trust`` and ``agent`` each
hold one group of commands; ``common`` and ``project`` what they share; ``client`` the running
agent's HTTP API (the only CLI module that imports httpx); ``progress`` the apply/down display.
"""
