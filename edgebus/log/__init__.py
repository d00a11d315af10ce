"""The storage engine: partitions as runs of segment files, with recovery and retention.

The log knows nothing of the server or the clients; the supervisor's loop is its only user.
"""

from edgebus.log.checkpoint import RecoveryPoint
from edgebus.log.manager import LogManager
from edgebus.log.partition import Partition
from edgebus.log.sync import SyncTicket
from edgebus.log.topic_config import TopicConfig, validate_topic_name

__all__ = [
    "LogManager",
    "Partition",
    "RecoveryPoint",
    "SyncTicket",
    "TopicConfig",
    "validate_topic_name",
]
