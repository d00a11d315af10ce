"""Client connections to the supervisor's Unix socket.

`SyncChannel` sends a request and reads until its response arrives (Admin, Consumer).
`AsyncChannel` pipelines requests; a reader thread resolves callbacks by correlation id (Producer).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgebus.errors import BrokerUnavailableError, OperationTimeoutError, ProtocolError
from edgebus.fastpath.fetch import FetchBody, fetch_response
from edgebus.paths import client_socket_path
from edgebus.protocol.codec import EncodedRequest, Message
from edgebus.protocol.framing import ClientProtocol, ResponseFrame
from edgebus.protocol.messages import Api

log = logging.getLogger("edgebus.channel")
RECV_SIZE = 1024 * 1024


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
    s.settimeout(None)
    return s


class SyncChannel:
    """One blocking connection; request() is not thread-safe (one caller at a time)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> None:
        self.path = resolve_socket(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._proto = ClientProtocol()
        self._corr = itertools.count(1)

    def _ensure(self) -> socket.socket:
        if self._sock is None:
            self._sock = connect(self.path)
            self._proto = ClientProtocol()
        return self._sock

    def request(self, api: int, body: Message | EncodedRequest, timeout: float | None = None) -> Any:
        """Send one request and return its decoded response (typed error on an error code)."""
        sock = self._ensure()
        corr = next(self._corr) & 0xFFFFFFFF
        try:
            frame = body.frame(corr) if isinstance(body, FetchBody) else ClientProtocol.encode_request(api, corr, body)
            sock.sendall(frame)
            resp = self._read(corr, self.timeout if timeout is None else timeout)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError) as e:
            self.close()
            raise BrokerUnavailableError(f"lost the connection to {self.path}: {e}") from None
        except ProtocolError:
            self.close()  # the stream is out of step: the next request starts on a new connection
            raise
        if api == Api.FETCH:
            return fetch_response(resp)  # the consumer's hot path, by hand; same results
        return ClientProtocol.decode_body(api, resp)

    def _read(self, corr: int, timeout: float) -> ResponseFrame:
        assert self._sock is not None
        deadline = time.monotonic() + timeout
        while True:
            frame = self._proto.next_response()
            if frame is not None:
                if frame.correlation_id == corr:
                    return frame
                continue  # a late answer to an abandoned request
            left = deadline - time.monotonic()
            if left <= 0:
                # The stream now holds a response we will not read in order: start afresh.
                self.close()
                raise OperationTimeoutError(f"no response from {self.path} within {timeout:.1f} s")
            r, _, _ = select.select([self._sock], [], [], left)
            if not r:
                continue
            data = self._sock.recv(RECV_SIZE)
            if not data:
                self.close()
                raise BrokerUnavailableError(f"the supervisor at {self.path} closed the connection")
            self._proto.receive_data(data)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


Callback = Callable[[ResponseFrame | None, BaseException | None], None]


class AsyncChannel:
    """Pipelined requests on one connection; callbacks run on the reader thread."""

    def __init__(self, path: Path, on_lost: Callable[[BaseException], None] | None = None) -> None:
        self.path = path
        self._sock = connect(path)
        self._proto = ClientProtocol()
        self._corr = itertools.count(1)
        self._lock = threading.Lock()
        self._pending: dict[int, Callback] = {}
        self._closed = False
        self.lost: BaseException | None = None
        self._on_lost = on_lost
        self._reader = threading.Thread(target=self._read_loop, name="edgebus-reader", daemon=True)
        self._reader.start()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def hurry(self) -> None:
        """Someone waits for an acknowledgement. The socket's reader is always woken per
        response, so nothing to do (the shared-memory channel may collect them lazily)."""

    def send(self, api: int, body: Message | EncodedRequest, callback: Callback | None) -> None:
        """Queue a request; callback(frame, None) on a response or (None, error) if lost.
        A None callback means no response is expected (acks=none)."""
        with self._lock:
            if self.lost is not None:
                raise BrokerUnavailableError(str(self.lost))
            corr = next(self._corr) & 0xFFFFFFFF
            if callback is not None:
                self._pending[corr] = callback
            data = ClientProtocol.encode_request(api, corr, body)
            try:
                self._sock.sendall(data)
            except OSError as e:
                self._pending.pop(corr, None)
                err = BrokerUnavailableError(f"lost the connection to {self.path}: {e}")
                raise err from None

    def _read_loop(self) -> None:
        err: BaseException
        try:
            while True:
                data = self._sock.recv(RECV_SIZE)
                if not data:
                    err = BrokerUnavailableError(f"the supervisor at {self.path} closed the connection")
                    break
                self._proto.receive_data(data)
                while (frame := self._proto.next_response()) is not None:
                    with self._lock:
                        cb = self._pending.pop(frame.correlation_id, None)
                    if cb is not None:
                        try:
                            cb(frame, None)
                        except Exception:  # never let one callback end the reader thread
                            log.exception("a response callback failed")
        except OSError as e:
            err = BrokerUnavailableError(f"lost the connection to {self.path}: {e}")
        except Exception as e:  # a protocol error from a broken peer
            err = e
        with self._lock:
            self.lost = err
            pending, self._pending = self._pending, {}
        for cb in pending.values():  # closed or not: every in-flight request gets an outcome
            try:
                cb(None, err)
            except Exception:  # a callback's failure must not keep the others from running
                log.exception("a response callback failed")
        if not self._closed and self._on_lost is not None:
            self._on_lost(err)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._reader.join(timeout=5)
