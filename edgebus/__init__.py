"""edgebus: a Kafka-style durable event log for a single edge host."""

__version__ = "0.1.0"
