"""The Kafka wire protocol, served by the supervisor (docs/KAFKA.md).

`framing` splits Kafka frames, `codec` decodes and encodes bodies with kio, `apis` is the
registry and dispatcher, `context` what handlers see of the supervisor; the handler modules
(`data`, `sasl`, and others) each list their APIs. The listener is
edgebus/server/listeners/kafka.py; `setup` wires both into a Broker's parts. kio is imported
only at the first Kafka connection (`front`), without hypothesis (edgebus/server/slim.py).
"""
