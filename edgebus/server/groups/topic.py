"""The internal topic of the committed offsets, its name and settings: what the supervisor needs
at start without the group modules (server/group_service.py makes those at first use)."""

from __future__ import annotations

from edgebus.log.topic_config import TopicConfig

OFFSETS_TOPIC = "__consumer_offsets"
# Small segments so that the cleaner rewrites little at a time; compacted, never expired by time
# or size. A deleted group's tombstones stay a day, as Kafka's offsets topic keeps them.
OFFSETS_SEGMENT_BYTES = 4 * 1024 * 1024
OFFSETS_TOPIC_CONFIG = TopicConfig(partitions=1, retention_ms=-1, retention_bytes=-1,
                                   segment_bytes=OFFSETS_SEGMENT_BYTES,
                                   max_message_bytes=1024 * 1024, cleanup_policy="compact",
                                   delete_retention_ms=24 * 3600 * 1000)
