"""The supervisor's single event loop: Unix socket, connections, timers, group commit."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import signal
import socket
import time
from pathlib import Path
from typing import Any

import psutil

from edgebus import format as F
from edgebus.errors import EdgebusError, ProtocolError, UnknownServerError
from edgebus.fastpath.supervisor import decode_produce, decode_request, encode_response
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.protocol import messages as M
from edgebus.protocol.framing import RequestFrame
from edgebus.server.connection import RECV_SIZE, Connection
from edgebus.server.disk import DiskGuard
from edgebus.server.fetchwait import FetchWaiters, ParkedFetch
from edgebus.server.groupcommit import GroupCommitter
from edgebus.server.groups import attach as attach_groups
from edgebus.server.handlers import DEFERRED, NO_RESPONSE, DurableWaiter, Handlers
from edgebus.server.shm_transport import attach as attach_shm
from edgebus.server.stats import Stats
from edgebus.version import __version__

log = logging.getLogger("edgebus.broker")

# Requests handled per connection per loop turn, so one busy client cannot starve the others.
MAX_REQUESTS_PER_TURN = 64
_PRODUCE = int(M.Api.PRODUCE)


class Broker:
    def __init__(
        self,
        logs: LogManager,
        socket_path: Path,
        *,
        socket_mode: int = 0o660,
        topic_defaults: TopicConfig | None = None,
        max_connections: int = 256,
        max_output_buffer: int = 64 * 1024 * 1024,
        max_fetch_wait_ms: int = 30_000,
        flush_interval_ms: int = 1000,
        checkpoint_interval_ms: int = 5000,
        retention_check_interval_ms: int = 60_000,
        notifier: Any = None,
        disk: DiskGuard | None = None,
        max_input_buffer: int = 2 * F.MAX_FRAME_BYTES,
    ) -> None:
        self.logs = logs
        self.socket_path = Path(socket_path)
        self.socket_mode = socket_mode
        self.topic_defaults = topic_defaults or TopicConfig()
        self.max_connections = max_connections
        self.max_output_buffer = max_output_buffer
        self.max_fetch_wait_ms = max_fetch_wait_ms
        self.flush_interval = flush_interval_ms / 1000
        self.checkpoint_interval = checkpoint_interval_ms / 1000
        self.retention_interval = retention_check_interval_ms / 1000
        self.notifier = notifier
        # Free-space watermarks and each topic's on_disk_full policy (edgebus/server/disk.py).
        self.disk = disk if disk is not None else DiskGuard(logs)
        # A client's unprocessed request bytes are not read past this (memory bound per client).
        self.max_input_buffer = max_input_buffer
        self.stats = Stats()  # records/bytes out, fsync latency (status and metrics)
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}
        self.waiters = FetchWaiters()
        self.handlers = Handlers(self)
        # Consumer groups (edgebus/server/groups): registers its APIs into handlers.table.
        self.groups = attach_groups(self)
        # Shared-memory rings (edgebus/server/shm_transport.py): registers SHM_ATTACH.
        self.shm = attach_shm(self)
        self.stopping = False
        self.started = time.time()
        self.records_in = 0
        self.bytes_in = 0
        self._next_id = 1
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.committer = GroupCommitter(self._wake_w)
        self._dirty_since_flush = False
        self._pending_process: set[int] = set()  # connections with whole frames left unhandled

    # --- setup -----------------------------------------------------------------------------------
    def listen(self) -> None:
        path = self.socket_path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            # A socket file left by a crashed supervisor; the data-dir lock proves no one serves it.
            path.unlink()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o777 & ~self.socket_mode)
        try:
            s.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, self.socket_mode)
        s.listen(128)
        s.setblocking(False)
        self._listener = s
        self.sel.register(s, selectors.EVENT_READ, "listen")
        self.sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if not self.stopping:
            log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stopping = True

    # --- main loop -------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        now = time.monotonic()
        next_flush = now + self.flush_interval
        next_checkpoint = now + self.checkpoint_interval
        next_retention = now + self.retention_interval
        next_watchdog = now
        while not self.stopping:
            now = time.monotonic()
            deadline = min(next_flush, next_checkpoint, next_retention, next_watchdog)
            fd = self.waiters.next_deadline()
            if fd is not None:
                deadline = min(deadline, fd)
            gd = self.groups.next_deadline()  # groups: session expiry, rebalances, cleaner
            if gd is not None:
                deadline = min(deadline, gd)
            deadline = min(deadline, self.disk.next_deadline())  # free-space check
            timeout = 0.0 if self._pending_process else max(0.0, deadline - now)
            if self.shm.spinning:  # shm: rings with recent traffic are polled, not waited for
                timeout = 0.0
            events = self.sel.select(timeout)
            for key, mask in events:
                tag = key.data
                if tag == "listen":
                    self._accept()
                elif tag == "wake":
                    self._drain_wake()
                elif callable(tag):  # an extra listener, e.g. the metrics endpoint
                    tag(mask)
                else:
                    conn: Connection = tag
                    if conn.closed:  # a send failed outside _process (EPIPE): finish closing it
                        self._close(conn)
                        continue
                    if mask & selectors.EVENT_WRITE:
                        self._on_writable(conn)
                    if mask & selectors.EVENT_READ and not conn.closed:
                        self._on_readable(conn)
            self.shm.poll(may_spin=not events and not self._pending_process)  # shm rings
            if self._pending_process:
                ids, self._pending_process = self._pending_process, set()
                for cid in ids:
                    c = self.conns.get(cid)
                    if c is not None and c.reading:
                        self._process(c)
            if self.committer.dirty:  # durable waiters: start() would find nothing otherwise
                self.committer.start()
            now = time.monotonic()
            for w in self.waiters.expired(now):
                self.complete_fetch(w)
            self.groups.tick(now)  # groups: expire sessions, finish rebalances, clean offsets
            self.disk.tick(now)  # watermarks: reject or drop-oldest below the low one
            if now >= next_flush:
                if self._dirty_since_flush and self.committer.start(self.logs.all_partitions()):
                    self._dirty_since_flush = False
                next_flush = now + self.flush_interval
            if now >= next_checkpoint:
                self._checkpoint()
                next_checkpoint = now + self.checkpoint_interval
            if now >= next_retention:
                self._retention()
                next_retention = now + self.retention_interval
            if now >= next_watchdog and self.notifier is None:
                next_watchdog = now + 3600.0  # no notifier: this timer must not keep the loop awake
            elif now >= next_watchdog and self.notifier is not None:
                self.notifier.tick(self)
                next_watchdog = now + self.notifier.interval
        self._shutdown()

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        self.committer.drain(self._answer_durable)
        self.stats.after_drain(self.committer)

    def _answer_durable(self, w: DurableWaiter, err: BaseException | None) -> None:
        if w.conn.closed:
            return
        if err is None:
            self._send(w.conn, w.correlation_id, w.response)
        else:
            code = err.code if isinstance(err, EdgebusError) else UnknownServerError.code
            self._send_error(w.conn, w.correlation_id, code, str(err))
        # The answer may wait in the output queue: make sure the loop watches for writability.
        self._update_interest(w.conn)

    def _accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                s, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE):
                    log.error("cannot accept a connection: %s", e)
                    return
                raise
            if self.stopping or len(self.conns) >= self.max_connections:
                log.warning("refused a connection: %s", "shutting down" if self.stopping
                            else f"{len(self.conns)} connections is the limit")
                s.close()
                continue
            s.setblocking(False)
            conn = Connection(s, self._next_id, self.max_output_buffer)
            self._next_id += 1
            self.conns[conn.id] = conn
            self.sel.register(s, selectors.EVENT_READ, conn)
            log.debug("accepted %r uid=%d", conn, conn.uid)

    def _on_readable(self, conn: Connection) -> None:
        if conn.proto.frames.buffered() >= self.max_input_buffer:
            return  # whole frames wait in _pending_process; read more once they are handled
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            log.info("%r read error: %s", conn, e)
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.proto.receive_data(data)
        self._process(conn)

    def _process(self, conn: Connection) -> None:
        handled = 0
        while not conn.closed and not conn.overloaded and handled < MAX_REQUESTS_PER_TURN:
            try:
                req = conn.proto.next_request()
            except ProtocolError as e:
                log.warning("%r sent a bad frame (%s); closing it", conn, e)
                self._close(conn)
                return
            if req is None:
                break
            handled += 1
            self._dispatch(conn, req)
        if conn.closed:
            self._close(conn)
            return
        self._update_interest(conn)
        if handled >= MAX_REQUESTS_PER_TURN and conn.proto.frames.buffered():
            # More complete frames may be buffered; come back next turn without waiting for input.
            self._pending_process.add(conn.id)

    def _dispatch(self, conn: Connection, req: RequestFrame) -> None:
        self.dispatch_frame(conn, req.api_key, req.api_version, req.correlation_id, req.body)

    def dispatch_frame(self, conn: Connection, api_key: int, api_version: int, corr: int,
                       body: memoryview) -> None:
        """Handle one request (socket and ring paths). A PRODUCE of version 0 whose body the
        struct-level decoder takes skips the request dataclass and returns its answer encoded;
        everything else (malformed bodies included) goes through the generic codec."""
        conn.requests += 1
        if api_key == _PRODUCE and api_version == 0:
            fields = decode_produce(body)
            if fields is not None:
                self._handle(conn, api_key, corr, self.handlers.produce_fields, fields)
                return
        self._handle(conn, api_key, corr, self._decode_and_handle,
                     (RequestFrame(api_key, api_version, corr, body),))

    def _decode_and_handle(self, conn: Connection, corr: int, req: RequestFrame) -> Any:
        body = decode_request(req)
        handler = self.handlers.table.get(req.api_key)
        if handler is None:
            raise UnknownServerError(f"API {req.api_key} is not served")
        return handler(conn, corr, body)

    def _handle(self, conn: Connection, api_key: int, corr: int, handler: Any, args: tuple[Any, ...]) -> None:
        """Run `handler(conn, corr, *args)` and send what it returns: a response body, an encoded
        response frame (bytes), DEFERRED or NO_RESPONSE; an error it raises is the answer."""
        try:
            result = handler(conn, corr, *args)
        except ProtocolError as e:
            log.warning("%r sent a malformed %s request (%s); closing it", conn, _api_name(api_key), e)
            self._send_error(conn, corr, e.code, str(e))
            conn.closed = True
            return
        except EdgebusError as e:
            self._send_error(conn, corr, e.code, str(e))
            return
        except Exception as e:  # a bug must not take down the supervisor for everyone
            log.exception("internal error handling %s from %r", _api_name(api_key), conn)
            self._send_error(conn, corr, UnknownServerError.code, f"internal error: {e}")
            return
        if result is DEFERRED or result is NO_RESPONSE:
            return
        if type(result) is bytes:
            conn.queue(result)
            return
        try:
            self._send(conn, corr, result)
        except Exception as e:  # an unencodable response must not take the supervisor down
            log.exception("cannot encode the %s response to %r", _api_name(api_key), conn)
            self._send_error(conn, corr, UnknownServerError.code, f"internal error: {e}")

    def _send(self, conn: Connection, corr: int, body: M.Message) -> None:
        if type(body) is M.FetchResponse:
            self.stats.fetch_sent(body)
        conn.queue(encode_response(corr, body))

    def _send_error(self, conn: Connection, corr: int, code: int, message: str) -> None:
        conn.queue(encode_response(corr, None, code, message))

    def _on_writable(self, conn: Connection) -> None:
        conn.flush()
        if conn.closed:
            self._close(conn)
            return
        was_overloaded_reads_off = not conn.reading
        self._update_interest(conn)
        if was_overloaded_reads_off and conn.reading:
            self._process(conn)

    def _update_interest(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.reading = not conn.overloaded
        mask = (selectors.EVENT_READ if conn.reading else 0) | (
            selectors.EVENT_WRITE if conn.out else 0)
        if mask != conn.events:  # called after every answer: most change nothing
            self.sel.modify(conn.sock, mask, conn)
            conn.events = mask

    def _close(self, conn: Connection) -> None:
        if conn.id not in self.conns:
            return
        del self.conns[conn.id]
        conn.closed = True
        for w in [w for w in self.waiters.all() if w.conn is conn]:
            self.waiters.remove(w)
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(conn.sock)
        conn.sock.close()
        if conn.shm is not None:  # shm: reclaim the rings at once
            self.shm.close_link(conn.shm)
        self.groups.connection_closed(conn)  # groups: its members die at once
        log.debug("closed %r after %d requests", conn, conn.requests)

    # --- fetch long-poll -------------------------------------------------------------------------
    def park_fetch(self, conn: Connection, corr: int, req: M.FetchRequest, wait_ms: int) -> None:
        self.waiters.park(ParkedFetch(conn, corr, req, time.monotonic() + wait_ms / 1000))

    def complete_fetch(self, w: ParkedFetch) -> None:
        if w.done:  # answered already (e.g. listed under two of its partitions)
            return
        self.waiters.remove(w)
        if w.conn.closed:
            return
        resp, _ = self.handlers.read_fetch(w.request)
        self._send(w.conn, w.correlation_id, resp)
        self._update_interest(w.conn)

    def on_append(self, p: Any, batch: Any = None, base: int = -1, append_time: int = -1) -> None:
        """Data was appended to `p`: answer the fetches parked on it that now have enough. With
        the one `batch` just appended (stamped `base`, `append_time`), a fetch asking for
        exactly that batch is answered from its bytes instead of reading them back."""
        self._dirty_since_flush = True
        for w in self.waiters.waiting_on(p.topic, p.partition):
            if batch is not None:
                frame = self.handlers.fetch_appended(w.correlation_id, w.request, p, batch, base,
                                                     append_time)
                if frame is not None:
                    self.waiters.remove(w)
                    if not w.conn.closed:
                        self.stats.batch_sent(batch)
                        w.conn.queue(frame)
                        self._update_interest(w.conn)
                    continue
            resp, total = self.handlers.read_fetch(w.request)
            if total >= w.request.min_bytes:
                self.waiters.remove(w)
                if not w.conn.closed:
                    self._send(w.conn, w.correlation_id, resp)
                    self._update_interest(w.conn)

    # --- housekeeping ----------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        # Snapshot here (cheap); the write and its two fsyncs run on the fsync thread.
        seq, data = self.logs.snapshot_checkpoint()

        def write() -> None:
            try:
                self.logs.write_checkpoint(data, seq)
            except (OSError, EdgebusError) as e:
                log.error("cannot write the recovery checkpoint: %s", e)

        self.committer.run_soon(write)

    def _retention(self) -> None:
        try:
            n = self.logs.apply_retention(time.time_ns() // 1_000_000)
            if n:
                log.info("retention deleted %d segment(s)", n)
        except (OSError, EdgebusError) as e:
            log.error("retention failed: %s", e)

    def status(self) -> dict[str, Any]:
        proc = psutil.Process()
        cpu = proc.cpu_times()
        disk = psutil.disk_usage(str(self.logs.data_dir))
        topics = {}
        for name in sorted(self.logs.topics()):
            parts = self.logs.partitions(name)
            topics[name] = {
                "partitions": [
                    {"partition": p.partition, "log_start_offset": p.log_start_offset,
                     "log_end_offset": p.log_end_offset, "size_bytes": p.size_bytes,
                     "segments": p.segment_count, "offline": p.offline}
                    for p in parts
                ],
                "size_bytes": sum(p.size_bytes for p in parts),
            }
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 1),
            "data_dir": str(self.logs.data_dir),
            "socket": str(self.socket_path),
            "disk": {"total": disk.total, "used": disk.used, "free": disk.free},
            "rss_bytes": proc.memory_info().rss,
            "cpu_s": round(cpu.user + cpu.system, 3),
            "connections": len(self.conns),
            "parked_fetches": self.waiters.count,
            "records_in": self.records_in,
            "bytes_in": self.bytes_in,
            "fsyncs": self.committer.syncs,
            "topics": topics,
        }

    # --- shutdown --------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        log.info("stopping: closing the socket, answering waiters, flushing the log")
        if self.notifier is not None:
            self.notifier.stopping()
        if self._listener is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(self._listener)
            self._listener.close()
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        for w in self.waiters.all():
            self.complete_fetch(w)
        # Finish in-flight and pending durable acks: wait for the running sync, then one more.
        deadline = time.monotonic() + 30
        while (self.committer.busy or self.committer.pending_waiters) and time.monotonic() < deadline:
            self.committer.start()
            time.sleep(0.001)
            self._drain_wake()
        for conn in list(self.conns.values()):
            conn.sock.setblocking(True)
            conn.sock.settimeout(1.0)
            with contextlib.suppress(OSError):
                conn.flush()
            self._close(conn)
        self.committer.close()
        self.logs.close()
        signal.set_wakeup_fd(-1)
        log.info("stopped cleanly")


def _api_name(key: int) -> str:
    try:
        return M.Api(key).name
    except ValueError:
        return f"api#{key}"
