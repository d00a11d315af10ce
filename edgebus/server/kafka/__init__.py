"""The Kafka wire protocol, served by the supervisor (docs/KAFKA.md).

`framing` splits Kafka frames, `codec` decodes and encodes bodies with kio, `apis` is the
registry and dispatcher, `context` what handlers see of the supervisor; the handler modules
(`data`, `sasl`, and others) each list their APIs. The listener is
edgebus/server/listeners/kafka.py; `setup` wires both into a Broker's parts.
"""

import sys

# kio gives its types hypothesis strategies at import whenever hypothesis is importable (any dev
# or test install): 0.3-0.7 s of every supervisor start, for strategies the supervisor never
# uses. So hypothesis is hidden while kio loads, unless this process has imported it already (a
# test process that uses hypothesis keeps kio's strategies). Production installs lack it anyway.
if "hypothesis" not in sys.modules and "kio.static.primitive" not in sys.modules:
    sys.modules["hypothesis"] = None  # type: ignore[assignment]  # None: "import hypothesis" fails
    try:
        import kio.static.primitive  # noqa: F401  (imports kio.static._phantom, which tries hypothesis)
    finally:
        del sys.modules["hypothesis"]
