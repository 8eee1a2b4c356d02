"""Plan: compare the desired project with the observed host and list what to do, and why.

The planner is pure: data in (a Project, an ObservedState), data out (a Plan), no side
effects. Its modules, in the style of docker/compose's reconciler:

- ``model``: the plan as data (OpKind, Operation, Plan) and the errors that refuse one;
- ``project``: ``plan_project``, which runs the reconcilers below in order;
- ``networks``, ``volumes``, ``images``, ``containers``, ``orphans``: one reconciler per kind;
- ``context``: the state one planning pass shares between them;
- ``down``: ``plan_down``, the teardown plan.

Rules (from the project's ownership contract):
- only objects labelled with this project are changed or removed; a name held by anything
  else is a ConflictError and the plan is refused as a whole;
- containers are recreated only when their config hash or image changed;
- named volumes are never removed or recreated by apply: a changed one is a warning.
"""

from gitdock.runtime.plan.down import plan_down
from gitdock.runtime.plan.images import familiar_image
from gitdock.runtime.plan.model import ConflictError, ContainerRef, Operation, OpKind, Plan, PlanError
from gitdock.runtime.plan.project import plan_project

__all__ = [
    "ConflictError",
    "ContainerRef",
    "OpKind",
    "Operation",
    "Plan",
    "PlanError",
    "familiar_image",
    "plan_down",
    "plan_project",
]
