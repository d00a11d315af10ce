"""Consumer groups in the supervisor.

- coordinator.py: membership, generations and rebalances (no sockets, no disk);
- assignors.py: range, round-robin and sticky assignment;
- offsets.py: committed offsets, durable in the internal topic `__consumer_offsets`;
- model.py: groups, members, states; leader.py: leader-assigned (Kafka classic) groups;
  static.py: static membership (group.instance.id);
- handlers.py: the group APIs and the groups' timers on the loop (a Service), gluing the three
  to the loop;
- topic.py: the offsets topic's name and settings, all the supervisor imports at start (it makes
  the rest at the first group request: server/group_service.py).

Importing the package imports none of them: `GroupHandlers` is imported when first named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgebus.server.groups.handlers import GroupHandlers

__all__ = ["GroupHandlers"]


def __getattr__(name: str) -> Any:
    if name == "GroupHandlers":  # the old import path, kept without importing it at start
        from edgebus.server.groups.handlers import GroupHandlers

        return GroupHandlers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
