"""The agent: the GitOps daemon and the ``gitdock`` command line.

``cli/`` is the command line. The daemon is ``server`` (HTTP API, webhooks) over ``daemon``
(the wiring) over ``scheduler`` (when) and ``reconcile`` (one reconcile, stage by stage:
fetch → load → converge → record), which use the seams ``git`` (pygit2), ``telemetry`` and
``metrics`` (OpenTelemetry, Prometheus) and the persisted ``state``.
"""
