"""The supervisor's codec entry points: the struct-level PRODUCE/FETCH codecs first, the generic
codec for everything else and for whatever those decline.

PRODUCE is decoded once: the loop calls `decode_produce` itself (its fields go to the handler
without a dataclass) and, when that declines, `decode_request`, which goes to the generic codec
straight away instead of trying the struct-level decoder a second time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgebus.fastpath.fetch import decode_fetch, encode_fetch
from edgebus.fastpath.produce import decode_produce, encode_produce, encode_produce_response
from edgebus.protocol.codec import Message
from edgebus.protocol.framing import RequestFrame, ServerProtocol
from edgebus.protocol.messages import Api, FetchResponse, ProduceResponse

__all__ = ["decode_produce", "decode_request", "encode_produce_response", "encode_response"]

_FETCH = int(Api.FETCH)
_FAST_RESPONSES: dict[type, Callable[[int, Any], bytes]] = {
    ProduceResponse: encode_produce, FetchResponse: encode_fetch,
}


def decode_request(req: RequestFrame) -> Message:
    """ServerProtocol.decode_body, with a version-0 FETCH of one partition read at struct level.
    ProtocolError for bad bytes, UnsupportedVersionError for an unknown API or version."""
    if req.api_key == _FETCH and req.api_version == 0:
        fetch = decode_fetch(req.body)
        if fetch is not None:
            return fetch
    return ServerProtocol.decode_body(req)


def encode_response(correlation_id: int, body: Message | None, error_code: int = 0,
                    error_message: str = "") -> bytes:
    """ServerProtocol.encode_response, with PRODUCE and FETCH responses written at struct level."""
    if not error_code and body is not None:
        fast = _FAST_RESPONSES.get(type(body))
        if fast is not None:
            # Anything the struct-level encoder does not take (a value out of range, a string
            # that is not UTF-8) goes to the generic codec, which gives its own error.
            try:
                return fast(correlation_id, body)
            except Exception:  # not contextlib.suppress: it costs a microsecond here
                pass
    return ServerProtocol.encode_response(correlation_id, body, error_code, error_message)
