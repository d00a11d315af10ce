"""The pending-request dispatcher every pipelined channel is built on, whatever its transport.

A pipelined channel (the producer's) sends requests from any thread and resolves each response
on its reader thread by correlation id. `Dispatcher` holds all of that: the correlation ids, the
callbacks of the requests in flight, the guard that keeps one raising callback from ending the
reader, and the end: when the stream is lost (or closed) every request still in flight gets
exactly one outcome, the error, and `on_lost` is told unless the channel was closed on purpose.
A transport (edgebus/client/channel.py: the socket; edgebus/client/shm_channel.py: the rings)
gives only `_write` (one request frame) and `_receive` (the next response frames, waiting).

Invariant: a callback is called at most once, with a frame or with the error, never both: it
leaves `_pending` (under `_lock`) before it is called, and `lost` is set under the same lock, so
no request is registered after the final sweep.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from edgebus import format as F
from edgebus.errors import BrokerUnavailableError, EdgebusError
from edgebus.protocol.codec import EncodedRequest, Message
from edgebus.protocol.framing import ClientProtocol, ResponseFrame

log = logging.getLogger("edgebus.channel")

Callback = Callable[[ResponseFrame | None, BaseException | None], None]
CORR_MASK = 0xFFFFFFFF  # correlation ids are u32 on the wire


def next_corr(counter: Iterator[int]) -> int:
    """The next correlation id: 1 .. 2**32 - 1, wrapping, never 0 (F.REFUSAL_CORRELATION_ID,
    which marks the supervisor's refusal of a connection)."""
    return (next(counter) - 1) % CORR_MASK + 1


def refusal(frame: ResponseFrame) -> EdgebusError | None:
    """The error of a frame that refuses the whole connection (an error with correlation id 0,
    docs/FORMAT.md 7.2: too many connections, shutting down), else None."""
    if frame.correlation_id != F.REFUSAL_CORRELATION_ID or not frame.error_code:
        return None
    try:
        ClientProtocol.decode_body(-1, frame)
    except EdgebusError as e:
        return e
    return None


def unwritten(path: object, e: BaseException) -> BrokerUnavailableError:
    """The error of a request whose write failed with its frame not whole in the stream. The
    supervisor takes only whole frames (a ring publishes one whole or not at all; a socket's
    part of one is dropped at the end of the connection, which the transport's `_write_failed`
    ends at once), so the request was not sent: saying so tells a caller it may send it again
    without doubling it."""
    text = str(e)
    if not text.startswith("lost the connection to "):  # the channel's own loss says so already
        text = f"lost the connection to {path}: {text}"
    return BrokerUnavailableError(f"not sent: {text}")


def interrupted(path: object, e: BaseException) -> BrokerUnavailableError:
    """The outcome of a request whose write was interrupted (a signal handler's exception,
    KeyboardInterrupt) before any of its frame reached the supervisor (a ring's: unpublished)."""
    return BrokerUnavailableError(f"not sent: its write to {path} was interrupted ({e!r})")


def encode(api: int, corr: int, body: Message | EncodedRequest) -> bytes:
    """The request frame: built by the body itself when it is already encoded, else the codec."""
    if isinstance(body, EncodedRequest):
        return body.frame(corr)
    return ClientProtocol.encode_request(api, corr, body)


class Dispatcher:
    """Requests in flight on one pipelined connection; callbacks run on the reader thread.

    Subclasses set `_write(frame)` (called under `_lock`, so one writer at a time; an attribute,
    so that it can be the transport's own method with no layer between), implement `_receive()`
    (the reader thread's wait for response frames; it raises to end the stream), and call
    `_start()` once they are ready to read.
    """

    _write: Callable[[bytes], object]

    def __init__(self, path: Path, on_lost: Callable[[BaseException], None] | None,
                 reader_name: str) -> None:
        self.path = path
        self._corr = itertools.count(1)
        self._lock = threading.Lock()  # the writer side and _pending
        self._pending: dict[int, Callback] = {}
        self._closed = False  # close() was called: the loss is no news to anyone
        self.lost: BaseException | None = None
        self._on_lost = on_lost
        self._reader = threading.Thread(target=self._read_loop, name=reader_name, daemon=True)

    def _start(self) -> None:
        self._reader.start()

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def hurry(self, once: bool = False) -> None:
        """Someone waits for an acknowledgement (a transport that collects them lazily wakes
        its reader; once: for the next one only); by default every response is delivered as it
        comes."""

    def reap(self, force: bool = False) -> None:
        """Deliver, in the calling thread, the responses already there that the reader is not
        being woken for (a transport that collects them lazily; force: look even if nothing was
        sent since the last look); by default nothing: the reader delivers every response as it
        comes."""

    def share_waiters(self, count: list[int], lock: threading.Lock) -> None:
        """Count another's blocked threads as waiters (a transport that collects acknowledgements
        lazily; LazyAcks); by default nothing."""

    def only_when_asked(self) -> None:
        """Nobody needs an acknowledgement before asking for it (a transport that collects them
        lazily then waits without a timer: LazyAcks); by default nothing."""

    def want_callbacks(self) -> None:
        """The producer has callbacks to run without anyone asking (a transport that collects
        acknowledgements lazily then bounds its unsignalled waits); by default nothing."""

    def unread(self) -> bool:
        """Whether the supervisor has yet to read a request written to it (the producer holds
        its next batch meanwhile); False where the transport cannot tell."""
        return False

    def waiting(self) -> AbstractContextManager[None]:
        """Entered while someone blocks on an acknowledgement (see hurry)."""
        return contextlib.nullcontext()

    def send(self, api: int, body: Message | EncodedRequest, callback: Callback | None) -> None:
        """Queue a request; callback(frame, None) on a response or (None, error) if lost.
        A None callback means no response is expected (acks=none)."""
        with self._lock:
            if self.lost is not None:
                raise unwritten(self.path, self.lost)  # lost before it was written: not sent
            corr = next_corr(self._corr)
            frame = body.frame(corr) if isinstance(body, EncodedRequest) \
                else ClientProtocol.encode_request(api, corr, body)
            if callback is not None:
                self._pending[corr] = callback
            try:
                self._write(frame)
                return
            except BaseException as e:
                # The transport ends a stream that may hold part of the frame (a socket's), and
                # says whether none of it can reach the supervisor; if some may (an interrupt
                # after sendall's last byte), the callback stays: the answer, or the loss of the
                # connection just ended, settles it (outcome unknown).
                if not self._write_failed(e):
                    raise
                self._pending.pop(corr, None)
                if isinstance(e, (BrokerUnavailableError, OSError)):
                    raise unwritten(self.path, e) from None
                err = e
        # An interrupt (KeyboardInterrupt) with nothing sent: the request fails, not sent, out of
        # _lock (its callback takes the caller's locks), and the interrupt goes on to the caller.
        try:
            if callback is not None:
                callback(None, interrupted(self.path, err))
        finally:
            raise err

    def _write_failed(self, e: BaseException) -> bool:
        """Under _lock, `_write` having raised e: end the connection if part of the frame may be
        in the stream, and say whether none of the frame can reach the supervisor (then its
        request was not sent). By default (a transport whose write is whole or nothing, and
        raises only before it), True."""
        return True

    def _receive(self) -> Iterable[ResponseFrame]:
        raise NotImplementedError

    def _deliver(self, frames: Iterable[ResponseFrame]) -> None:
        """Run the callbacks of response frames, in order (the reader thread, or a transport's
        reaping sender: one of them at a time). Raises the refusal of the whole connection; a
        callback's BaseException (KeyboardInterrupt) once every frame has had its callback."""
        lock, pending = self._lock, self._pending
        failed: BaseException | None = None
        for frame in frames:
            with lock:
                cb = pending.pop(frame.correlation_id, None)
            if cb is None and (refused := refusal(frame)) is not None:
                raise refused  # the supervisor refused this connection: end with it
            if cb is not None:
                try:
                    cb(frame, None)
                except Exception:  # never let one callback end the reader thread
                    log.exception("a response callback failed")
                except BaseException as e:  # the frames taken after it still get theirs
                    if failed is None:
                        failed = e
        if failed is not None:
            raise failed

    def _read_loop(self) -> None:
        err: BaseException
        deliver, receive = self._deliver, self._receive
        while True:
            try:
                while True:
                    deliver(receive())
            except OSError as e:
                err = BrokerUnavailableError(f"lost the connection to {self.path}: {e}")
            except Exception as e:  # the stream ended (BrokerUnavailableError) or a broken peer
                err = e
            except BaseException as e:
                # A user callback's KeyboardInterrupt or SystemExit, raised once every answer
                # read had its outcome: this thread has nobody to raise it to. Logged, and the
                # reading goes on (as Kafka's producer does with its I/O thread's callbacks);
                # ending it would leave every request in flight without its answer.
                log.error("a callback raised %r in the reader thread; logged, reading goes on",
                          e, exc_info=e)
                continue
            break
        self._lose(err)

    def _lose(self, err: BaseException) -> None:
        with self._lock:
            self.lost = err
            pending = list(self._pending.values())
            self._pending.clear()
        for cb in pending:  # closed or not: every in-flight request gets an outcome
            try:
                cb(None, err)
            except Exception:  # a callback's failure must not keep the others from running
                log.exception("a response callback failed")
            except BaseException as e:  # a user's KeyboardInterrupt: as in _read_loop
                log.error("a callback raised %r in the reader thread; logged, the other "
                          "requests in flight still get their outcome", e, exc_info=e)
        if not self._closed and self._on_lost is not None:
            try:
                self._on_lost(err)
            except Exception:
                log.exception("the on_lost callback failed")
