"""edgebus: a Kafka-style durable event log for a single edge host.

The public client API is loaded on first use (PEP 562), so that `import edgebus.log` or the
supervisor does not import the client library and its transports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from edgebus.version import __version__

if TYPE_CHECKING:
    from edgebus.batch import Record
    from edgebus.client.admin import Admin
    from edgebus.client.consumer import Consumer
    from edgebus.client.group import OffsetAndMetadata, RebalanceListener
    from edgebus.client.producer import Producer
    from edgebus.client.replica import (
        BatchReader,
        PartitionRead,
        ReplicaLink,
        StoredBatch,
        TopicInfo,
        client_context,
    )
    from edgebus.client.types import (
        OffsetAndTimestamp,
        RecordMetadata,
        TopicPartition,
        partition_for_key,
    )

# public name -> the module that defines it
_PUBLIC = {
    "Record": "edgebus.batch",
    "Admin": "edgebus.client.admin",
    "Consumer": "edgebus.client.consumer",
    "OffsetAndMetadata": "edgebus.client.group",
    "RebalanceListener": "edgebus.client.group",
    "Producer": "edgebus.client.producer",
    "BatchReader": "edgebus.client.replica",
    "ReplicaLink": "edgebus.client.replica",
    "PartitionRead": "edgebus.client.replica",
    "StoredBatch": "edgebus.client.replica",
    "TopicInfo": "edgebus.client.replica",
    "client_context": "edgebus.client.replica",
    "OffsetAndTimestamp": "edgebus.client.types",
    "RecordMetadata": "edgebus.client.types",
    "TopicPartition": "edgebus.client.types",
    "partition_for_key": "edgebus.client.types",
}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'edgebus' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Admin",
    "BatchReader",
    "Consumer",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "PartitionRead",
    "Producer",
    "RebalanceListener",
    "Record",
    "RecordMetadata",
    "ReplicaLink",
    "StoredBatch",
    "TopicInfo",
    "TopicPartition",
    "__version__",
    "client_context",
    "partition_for_key",
]
