"""Requests to a replica listener sent in two steps: the request now, straight from the caller's
buffer, and its answer later (ReplicaLink.append_begin). The replicator reads the next batches
from its source while the peer writes (bridges/replicator/inflight.py), and a multi-MiB append
is never copied into a joined frame (sendmsg sends the header and the batches as they are).
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass
from typing import Any

from edgebus import format as F
from edgebus.client.channel import SyncChannel
from edgebus.client.dispatch import next_corr
from edgebus.errors import BrokerUnavailableError, ProtocolError
from edgebus.protocol import messages as M
from edgebus.protocol.codec import EncodedRequest, Message
from edgebus.protocol.framing import ClientProtocol


class SplitRequestChannel(SyncChannel):
    """A SyncChannel that can also send a request and read its answer later (one at a time)."""

    in_flight: int | None = None  # begin() sent it, finish() has not read its answer

    def request(self, api: int, body: Message | EncodedRequest, timeout: float | None = None
                ) -> Any:
        if self.in_flight is not None:  # answers are read in order: finish() that one first
            raise RuntimeError("a request is in flight on this replica link (finish it first)")
        return super().request(api, body, timeout)

    def begin(self, api: int, head: Message, data: bytes | memoryview) -> int:
        """Send a request whose last field is `data` (a BYTES field), straight from the
        caller's buffer (no join of a multi-MiB frame); finish() reads the answer later, so
        that the caller can do other work (read the next batches) meanwhile. `head` encodes
        every field before it. One request in flight at a time."""
        if self.in_flight is not None:
            raise RuntimeError("a request is in flight on this replica link (finish it first)")
        self._ensure()
        out: list[bytes] = []
        type(head).encode(head, out)
        out.append(F.BYTES_LENGTH.pack(len(data)))
        n = sum(map(len, out)) + len(data)
        corr = next_corr(self._corr)
        frame = b"".join([F.REQUEST_HEADER.pack(F.REQUEST_MIN_LENGTH + n, api, 0, corr), *out])
        try:
            self._write_parts(frame, data)
        except BaseException as e:
            # Part of the frame may be in the stream (an interrupt raised inside sendmsg or
            # sendall, too): the next request would follow it, read as its rest
            self.close()
            if isinstance(e, OSError):
                raise BrokerUnavailableError(f"lost the connection to {self.path}: {e}") from None
            raise
        self.in_flight = corr
        return corr

    def finish(self, api: int, corr: int) -> Any:
        """The answer to the request begin() sent (its typed error raised), waiting at most
        the channel's timeout from now."""
        if self.in_flight != corr or self._sock is None:  # closed meanwhile
            self.in_flight = None
            raise BrokerUnavailableError(f"lost the connection to {self.path} before the answer")
        self.in_flight = None
        deadline = time.monotonic() + self.timeout
        try:
            frame = self._wait(corr, deadline, self.timeout)
        except (OSError, BrokerUnavailableError) as e:
            self.close()
            raise BrokerUnavailableError(f"lost the connection to {self.path}: {e}") from None
        except ProtocolError:
            self.close()
            raise
        assert frame is not None
        return ClientProtocol.decode_body(api, frame)

    def _write_parts(self, head: bytes, data: bytes | memoryview) -> None:
        sock = self._sock
        assert sock is not None
        if isinstance(sock, ssl.SSLSocket):  # no sendmsg; TLS copies into records anyway
            sock.sendall(head)
            sock.sendall(data)
            return
        parts = [memoryview(head), memoryview(data)]
        while parts:  # a blocking socket: each sendmsg sends something
            sent = sock.sendmsg(parts)
            while sent:
                if sent >= len(parts[0]):
                    sent -= len(parts.pop(0))
                else:
                    parts[0], sent = parts[0][sent:], 0
            if parts and not len(parts[0]):
                parts.pop(0)

    def close(self) -> None:
        self.in_flight = None
        super().close()


@dataclass
class AppendHead(Message):
    """A REPLICA_APPEND's fields before its batches (sent from their own buffer: SplitRequestChannel.begin)."""

    topic: str
    partition: int
    incarnation: str
    acks: int
    FIELDS = M.ReplicaAppendRequest.FIELDS[:-1]


@dataclass
class CompressedHead(Message):
    topic: str
    partition: int
    incarnation: str
    acks: int
    codec: int
    raw_bytes: int
    FIELDS = M.ReplicaAppendCompressedRequest.FIELDS[:-1]


assert M.ReplicaAppendRequest.FIELDS[-1][0] == M.ReplicaAppendCompressedRequest.FIELDS[-1][0] \
    == "batches"


class PendingAppend:
    """A REPLICA_APPEND sent and not yet answered (ReplicaLink.append_begin)."""

    def __init__(self, ch: SplitRequestChannel, api: int, corr: int, sent: int) -> None:
        self._ch, self._api, self._corr = ch, api, corr
        self.sent = sent  # bytes of batches as they went on the wire (compressed or not)

    def result(self) -> tuple[int, int, int]:
        """(batches appended, batches the mirror already held, the mirror's log end)."""
        r = self._ch.finish(self._api, self._corr)
        return r.appended, r.present, r.log_end_offset
