"""Docker Swarm as a target: the same observe → plan → execute model as the container target.

``load`` reads what the normalised model leaves out for a plain host (the ``deploy`` keys
Swarm alone honours, network ``attachable``, port ``mode``); ``desired`` maps the project to
Swarm ServiceSpecs (pure); ``observe`` lists the stack's services, networks, configs and
secrets in four calls; ``plan`` turns (desired, observed) into the shared ``Plan`` (pure);
``execute`` runs it through the service-update API and follows each rollout; ``drift``
names what changed by hand; ``converge`` ties them together.
"""
