"""Consumer groups in the supervisor.

- coordinator.py: membership, generations and rebalances (no sockets, no disk);
- assignors.py: range, round-robin and sticky assignment;
- offsets.py: committed offsets, durable in the internal topic `__consumer_offsets`;
- model.py: groups, members, states; leader.py: leader-assigned (Kafka classic) groups;
  static.py: static membership (group.instance.id);
- handlers.py: the group APIs and the groups' timers on the loop (a Service), gluing the three
  to the loop.
"""

from __future__ import annotations

from edgebus.server.groups.handlers import GroupHandlers

__all__ = ["GroupHandlers"]
