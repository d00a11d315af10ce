"""Idempotent producers and transactions, one implementation for both front ends (the Kafka
listener, server/kafka/produce.py and txn.py, and the native APIs, server/handlers/txn.py):
`producers` (producer ids, per-partition sequence checks), `coordinator` (the transaction
coordinator), `state` (its durable file), `mark` (the batches it builds)."""
