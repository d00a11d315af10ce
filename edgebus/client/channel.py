"""Client channels: what Producer, Consumer, Admin and the group code use, and the socket's.

`RequestChannel` (one request at a time: Admin, Consumer, the group coordinator link) and
`PipelinedChannel` (many in flight, callbacks on a reader thread: Producer) are the interfaces.
`SyncChannel` and `AsyncChannel` implement them over the supervisor's Unix socket; the
shared-memory channels (edgebus/client/shm_channel.py) are the same classes with another
transport underneath. What the transports share is written once: the request/wait-by-correlation
logic in `SyncChannel`, the pending-request dispatcher in `Dispatcher` (edgebus/client/dispatch.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import select
import socket
import termios
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from edgebus.client.dispatch import Callback, Dispatcher, encode, next_corr, refusal
from edgebus.errors import (
    BrokerUnavailableError,
    OperationTimeoutError,
    ProtocolError,
    UntrustedSocketError,
)
from edgebus.fastpath.fetch import fetch_response
from edgebus.paths import client_socket_path
from edgebus.peercred import SERVICE_USER, peer_cred, trusted_supervisor_uids, user_name
from edgebus.protocol.codec import EncodedRequest, Message
from edgebus.protocol.framing import ClientProtocol, ResponseFrame, whole_responses
from edgebus.protocol.messages import Api
from edgebus.protocol.registry import version_of

RECV_SIZE = 1024 * 1024
# The rest of a frame at least this large is read straight into a buffer of the frame's size
# (recv_into): not read in RECV_SIZE pieces, each a new bytes object then copied onto the end
# of the frame buffer. A replicator's 4 MiB REPLICA_FETCH answer is copied once, not twice.
DIRECT_RECV_BYTES = 256 * 1024
_ZERO4 = bytes(4)  # an int-sized ioctl buffer holding 0


class RequestChannel(Protocol):
    """One request at a time, answered in the caller's thread (not thread-safe)."""

    path: Path

    def request(self, api: int, body: Any, timeout: float | None = None) -> Any:
        """The decoded response (raises its typed error), or BrokerUnavailableError /
        OperationTimeoutError; the next request after those starts on a new connection."""
        ...

    def close(self) -> None: ...


class PipelinedChannel(Protocol):
    """Requests pipelined from any thread; callbacks run on the channel's reader thread."""

    path: Path
    lost: BaseException | None

    @property
    def in_flight(self) -> int: ...

    def send(self, api: int, body: Any, callback: Callback | None) -> None: ...

    def hurry(self, once: bool = False) -> None: ...

    def reap(self, force: bool = False) -> None: ...

    def only_when_asked(self) -> None: ...

    def want_callbacks(self) -> None: ...

    def share_waiters(self, count: list[int], lock: threading.Lock) -> None: ...

    def unread(self) -> bool: ...

    def waiting(self) -> AbstractContextManager[None]: ...

    def close(self) -> None: ...


def resolve_socket(path: str | os.PathLike[str] | None) -> Path:
    return Path(path) if path is not None else client_socket_path()


def connect(path: Path, timeout: float | None = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as e:
        s.close()
        raise BrokerUnavailableError(
            f"cannot connect to the edgebus supervisor at {path}: {e.strerror}") from None
    except OSError as e:
        s.close()
        raise BrokerUnavailableError(f"cannot connect to the edgebus supervisor at {path}: {e}") from None
    try:
        check_server(s, path)
    except BaseException:
        s.close()
        raise
    s.settimeout(None)
    return s


def check_server(s: socket.socket, path: Path) -> None:
    """UntrustedSocketError unless the process serving `s` runs as a user this client trusts
    (its own, root, the edgebus service user, $EDGEBUS_SUPERVISOR_USER): checked right after
    connect, before a byte is sent, so a socket another local user put at the path learns
    nothing (edgebus/peercred.py)."""
    try:
        pid, uid, _ = peer_cred(s)
    except OSError as e:
        raise BrokerUnavailableError(f"cannot identify the process serving {path}: {e}") from None
    if uid not in trusted_supervisor_uids():
        raise UntrustedSocketError(
            f"refusing the socket {path}: it is served by {user_name(uid)} (pid {pid}), not by "
            f"this user, root or the {SERVICE_USER} service user; nothing was sent")


class SyncChannel:
    """One blocking connection on the socket; request() is not thread-safe (one caller at a time).

    The transport-neutral part (correlation, waiting, errors) is here; a transport overrides
    `_connect`, `_write` and `_frames` (ShmSyncChannel), and may keep frames that are not the
    awaited one (`_keep`) and answer FETCH its own way (`_fetch`).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> None:
        self.path = resolve_socket(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._proto = ClientProtocol()
        self._corr = itertools.count(1)
        self._direct = True  # recv_into for large frames (not over TLS: select() misses its buffer)

    def _ensure(self) -> None:
        if self._sock is None:
            self._connect()

    def _connect(self) -> None:
        self._sock = connect(self.path)
        self._proto = ClientProtocol()

    def request(self, api: int, body: Message | EncodedRequest, timeout: float | None = None) -> Any:
        """Send one request and return its decoded response (typed error on an error code)."""
        self._ensure()
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        try:
            if api == Api.FETCH:
                return self._fetch(body, deadline, t)
            frame = self._roundtrip(api, body, deadline, t)
        except (OSError, BrokerUnavailableError) as e:
            self.close()
            raise BrokerUnavailableError(f"lost the connection to {self.path}: {e}") from None
        except ProtocolError:
            self.close()  # the stream is out of step: the next request starts on a new connection
            raise
        return ClientProtocol.decode_body(api, frame, version_of(body))

    def _fetch(self, body: Any, deadline: float, t: float) -> Any:
        return fetch_response(self._roundtrip(Api.FETCH, body, deadline, t))  # by hand; same results

    def _send(self, api: int, body: Message | EncodedRequest, deadline: float) -> int:
        corr = next_corr(self._corr)
        self._write(encode(api, corr, body), deadline)
        return corr

    def _roundtrip(self, api: int, body: Message | EncodedRequest, deadline: float, t: float
                   ) -> ResponseFrame:
        frame = self._wait(self._send(api, body, deadline), deadline, t)
        assert frame is not None
        return frame

    def _wait(self, corr: int, deadline: float, t: float, soft: bool = False
              ) -> ResponseFrame | None:
        """The response to corr; other frames are late answers to abandoned requests, dropped
        unless `_keep` keeps them. soft: None at the deadline (the request stays outstanding)
        instead of closing the channel."""
        while True:
            frames = self._frames(deadline)
            if not frames:
                if soft:
                    return None
                # The stream may still bring a response we will not read in order: start afresh.
                self.close()
                raise OperationTimeoutError(f"no response from {self.path} within {t:.1f} s")
            found = None
            for f in frames:
                if f.correlation_id == corr:
                    found = f
                elif (refused := refusal(f)) is not None:
                    self.close()  # the supervisor refused this connection (too many, stopping)
                    raise refused
                else:
                    self._keep(f)
            if found is not None:
                return found

    def _keep(self, frame: ResponseFrame) -> None:
        """A frame that is not the awaited one: dropped."""

    # --- the socket transport --------------------------------------------------------------------
    def _write(self, frame: bytes, deadline: float) -> None:
        assert self._sock is not None
        try:
            self._sock.sendall(frame)
        except BaseException:
            # Part of the frame may be in the stream (a failed sendall, or one a signal
            # handler's KeyboardInterrupt interrupted): the next request would follow it, read as
            # its rest. The connection ends (the supervisor drops the part); the next request
            # makes a new one.
            self.close()
            raise

    def _frames(self, deadline: float) -> list[ResponseFrame]:
        """The response frames buffered or next received; [] at the deadline."""
        sock, proto = self._sock, self._proto
        assert sock is not None
        frames = proto.frames
        # Every return takes all whole frames, so bytes are buffered here only for a partial
        # frame (or what _recv_rest adopted): parsed and sized only then, a consumer's poll
        # costs fewer calls.
        partial = frames.buffered() > 0
        while True:
            out = []
            if partial:
                while (f := proto.next_response()) is not None:
                    out.append(f)
                    if not frames.buffered():
                        return out
                if out:
                    return out
            left = deadline - time.monotonic()
            if left <= 0:
                return out
            r, _, _ = select.select([sock], [], [], left)
            if r:
                need = frames.need() if self._direct and partial else 0
                if need >= DIRECT_RECV_BYTES:
                    self._recv_rest(sock, need, deadline)
                    continue
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise BrokerUnavailableError("the supervisor closed the connection")
                if partial:
                    frames.feed(data)
                    continue
                # Nothing was buffered: the whole frames this read brought are split in one
                # call (a paced consumer's every answer); the rest is the buffer's.
                out, end = whole_responses(data)
                if end < len(data):
                    frames.feed(memoryview(data)[end:])
                    partial = True
                if out:
                    return out

    def _recv_rest(self, sock: socket.socket, need: int, deadline: float) -> None:
        """Read the `need` bytes that complete the frame being received into one buffer of the
        frame's size, handed to the frame buffer whole (or as far as it got by the deadline)."""
        frames = self._proto.frames
        head = frames.take()
        buf = bytearray(len(head) + need)
        buf[: len(head)] = head
        view = memoryview(buf)
        got = len(head)
        try:
            while got < len(buf):
                n = sock.recv_into(view[got:])
                if not n:
                    raise BrokerUnavailableError("the supervisor closed the connection")
                got += n
                left = deadline - time.monotonic()
                if got < len(buf) and (left <= 0 or not select.select([sock], [], [], left)[0]):
                    break  # the deadline: what came is kept, the caller decides
        finally:
            try:
                view.release()
                del buf[got:]
            except BufferError:  # a slice still held by an exception's traceback
                buf = buf[:got]
            frames.adopt(buf)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def shut(self) -> None:
        """The last close() (the shared-memory channel's also waits out a request under way in
        another thread: ShmSyncChannel.shut)."""
        self.close()


class AsyncChannel(Dispatcher):
    """Pipelined requests on one socket connection (Dispatcher: the transport-neutral part)."""

    def __init__(self, path: Path, on_lost: Callable[[BaseException], None] | None = None) -> None:
        super().__init__(path, on_lost, "edgebus-reader")
        self._sock = connect(path)
        self._proto = ClientProtocol()
        self._write = self._sock.sendall
        self._start()

    def _write_failed(self, e: BaseException) -> bool:
        """Dispatcher._write_failed for the socket: part of the frame may be in the stream, and
        the supervisor would read the next frame written as its rest (garbage, or worse, parsed).
        The connection ends now: shut down, the supervisor reads that part, then the end, and
        drops it (it takes only whole frames); our reader meets the end, and every request in
        flight gets the loss as its outcome. Not sent only for the kernel's error (an OSError
        with an errno): sendall raises one only while bytes of the frame remain. A signal
        handler's exception raised in it (KeyboardInterrupt, or an OSError of its own, errno
        None: the signal module's own example) may come after its last byte, which CPython's
        sendall checks for signals after too (review31 stored a record twice that way): the
        outcome is then unknown."""
        self._end_stream()
        return isinstance(e, OSError) and e.errno is not None

    def _end_stream(self) -> None:
        with contextlib.suppress(OSError):  # closed meanwhile (close()): ended already
            self._sock.shutdown(socket.SHUT_RDWR)

    def unread(self) -> bool:
        # SIOCOUTQ on a Unix stream socket: bytes written and not yet read by the peer (they
        # stay charged to the sender until the receiver consumes them).
        try:
            return fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, _ZERO4) != _ZERO4
        except OSError:
            return False

    def _receive(self) -> Iterable[ResponseFrame]:
        data = self._sock.recv(RECV_SIZE)
        if not data:
            raise BrokerUnavailableError(f"the supervisor at {self.path} closed the connection")
        self._proto.receive_data(data)
        return iter(self._proto.next_response, None)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(timeout=5)


__all__ = ["AsyncChannel", "Callback", "PipelinedChannel", "RequestChannel", "SyncChannel",
           "connect", "resolve_socket"]
