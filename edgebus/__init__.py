"""edgebus: a Kafka-style durable event log for a single edge host."""

from edgebus.batch import Record
from edgebus.client.admin import Admin
from edgebus.client.consumer import Consumer
from edgebus.client.group import OffsetAndMetadata, RebalanceListener
from edgebus.client.producer import Producer
from edgebus.client.types import (
    OffsetAndTimestamp,
    RecordMetadata,
    TopicPartition,
    partition_for_key,
)

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "Consumer",
    "OffsetAndMetadata",
    "OffsetAndTimestamp",
    "Producer",
    "RebalanceListener",
    "Record",
    "RecordMetadata",
    "TopicPartition",
    "__version__",
    "partition_for_key",
]
