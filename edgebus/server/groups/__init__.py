"""Consumer groups in the supervisor.

- coordinator.py: membership, generations and rebalances (no sockets, no disk);
- assignors.py: range, round-robin and sticky assignment;
- offsets.py: committed offsets, durable in the internal topic `__consumer_offsets`;
- handlers.py: the group APIs on the loop, gluing the three to the broker.
"""

from __future__ import annotations

from typing import Any

from edgebus.server.groups.handlers import GroupHandlers


def attach(broker: Any, **options: Any) -> GroupHandlers:
    """Open the offset store, create the coordinator and serve the group APIs on `broker`."""
    groups = GroupHandlers(broker, **options)
    groups.register(broker.handlers.table)
    return groups


__all__ = ["GroupHandlers", "attach"]
