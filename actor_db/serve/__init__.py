"""Serving actors over HTTP from many processes and machines: one actor, one place.

- :mod:`actor_db.serve.node`: placement (owner records, heartbeats, takeover) and routing.
- :mod:`actor_db.serve.app`: the ASGI application (``registry.asgi()``).
- :mod:`actor_db.serve.wire`: node-to-node forwarding.
- :mod:`actor_db.serve.command`: ``actor-db serve``.

See docs/deployment.md.
"""

from actor_db.serve.app import ActorApp
from actor_db.serve.node import Node, NodeOptions

__all__ = ["ActorApp", "Node", "NodeOptions"]
