"""The data plane's hand-written codecs: PRODUCE and FETCH (version 0), both sides, in one place.

In the latency case (one record per PRODUCE, a FETCH parked for each append) each side encodes or
decodes a request and a response per record, and the generic dataclass codec
(edgebus/protocol/codec.py) costs microseconds each time, as much as the rest of the work. The
functions here give exactly the generic codec's bytes and values (docs/FORMAT.md 7.6), with the
fixed runs of fields declared once in edgebus/format.py, and decline anything unusual: a decoder
returns None (the generic codec then decodes it, or raises its own ProtocolError), an encoder
raises and the caller falls back.

- `produce`: the producer's request body and acknowledgement; the supervisor's request decoder
  and response encoder.
- `fetch`: the consumer's request bodies (a `FetchPlan` per assignment) and response decoder; the
  supervisor's request decoder and response encoders.
- `supervisor`: the supervisor's entry points, which try these first and fall back to the generic
  codec (`decode_request`, `encode_response`).
- `strings`: the bounded caches of topic names both sides meet on every request.

Bodies the client encodes ahead are `edgebus.protocol.codec.EncodedRequest`s: they build their
whole frame (`frame(correlation_id)`), so a channel sends them as they are.
"""
