"""edgebus: a Kafka-style durable event log for a single edge host."""

from edgebus.batch import Record
from edgebus.client.admin import Admin
from edgebus.client.consumer import Consumer
from edgebus.client.producer import Producer
from edgebus.client.types import OffsetAndTimestamp, RecordMetadata, TopicPartition

__version__ = "0.1.0"

__all__ = [
    "Admin",
    "Consumer",
    "OffsetAndTimestamp",
    "Producer",
    "Record",
    "RecordMetadata",
    "TopicPartition",
    "__version__",
]
