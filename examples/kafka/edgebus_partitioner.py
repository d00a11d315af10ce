"""A kafka-python (3.x) partitioner that puts a key where edgebus's own Producer, kcat and
librdkafka (confluent-kafka) put it: CRC-32 (IEEE) of the key bytes, modulo the partition count.
kafka-python's default (murmur2, as the Java client) sends a key to another partition, so one key
written by both kinds of producer would be split over two partitions (docs/KAFKA.md, "Keys and
partitions"). Usage:

    from edgebus_partitioner import EdgebusPartitioner
    producer = KafkaProducer(bootstrap_servers="127.0.0.1:9092", partitioner=EdgebusPartitioner())
"""

from __future__ import annotations

import random
import zlib
from typing import Any

from kafka.partitioner import Partitioner


class EdgebusPartitioner(Partitioner):
    def partition(self, topic: str, key: Any, serialized_key: bytes | None, value: Any,
                  serialized_value: bytes | None, cluster: Any) -> int:
        partitions = sorted(cluster.partitions_for_topic(topic))
        if serialized_key is None:  # no partition to agree on
            return int(random.choice(partitions))
        return int(partitions[zlib.crc32(serialized_key) % len(partitions)])
