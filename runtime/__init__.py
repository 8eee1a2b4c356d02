"""The runtime: one reconcile of a loaded project against a Docker host.

In pipeline order (``converge`` runs them):

- ``trust/`` verify: resolve every image to a digest and check its signatures by policy;
- ``observe``: one snapshot of the live state (four list calls);
- ``desired``: the whole Compose → Engine API mapping (names, labels, hashes, bodies);
- ``plan/``: the pure planner, one reconciler per resource kind;
- ``execute``: walk the plan's DAG, one Docker call per step, no decisions;
- ``record``: what an apply left, for drift detection;
- ``drift/``: detect (pure) and watch (Docker events) drift.

``docker`` is the seam to dockerd and ``labels`` names everything gitdock owns.
"""
