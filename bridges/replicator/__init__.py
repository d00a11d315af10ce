"""The replicator: partitions off the box, to a peer edge node (docs/REPLICATION.md).

A separate process on the public client API (`edgebus replicate --config FILE`), like the MQTT
bridge: it reads batches from the local supervisor (edgebus.BatchReader) and ships them to each
link's target. The resume point is always read from the target, never from a local note.
"""
