"""The NATS JetStream target: each source partition as one subject of a stream on a JetStream
cluster (docs/REPLICATION.md, "NATS JetStream"; the message layout in nats_codec.py).

No holes, no doubles: records go as JetStream *atomic batches* (nats-server 2.12+, the stream's
allow_atomic), at most one batch of a partition in flight. A batch is stored whole or not at
all, and its first message says which message must be the subject's last
(Nats-Expected-Last-Subject-Sequence), so a batch can never land after a missing one, nor
after a stale batch of an older session. The cursor is read from the destination at the
start of every session: the subject's last message (JetStream "get last message by subject")
carries the offset to resume from; the dedup window (Nats-Msg-Id) is only a second guard.

nats-py is asyncio and the Target protocol is synchronous: the target runs a private event loop
on its own thread, from connect() to close(); every call waits for its coroutine with a bound.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import ssl
import threading
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeAlias, TypeVar

from bridges.replicator.config import LinkConfig
from bridges.replicator.targets import nats_codec as C
from bridges.replicator.targets import nats_frames as F
from bridges.replicator.targets.nats_errors import (
    ERR_NO_MESSAGE,
    ERR_STREAM_NOT_FOUND,
    NatsTimeoutError,
    NatsUnavailableError,
    api_error,
    mapped_error,
)
from bridges.replicator.targets.nats_refusals import SubjectAccess
from edgebus import PartitionRead, TopicInfo, client_context
from edgebus.errors import (
    AuthenticationError,
    EdgebusError,
    IncarnationMismatchError,
    NotAMirrorError,
)

T = TypeVar("T")
# What a coroutine of the private loop ended with: (True, its result) or (False, its exception).
_Outcome: TypeAlias = tuple[bool, T | BaseException]
log = logging.getLogger("edgebus.replicator")

class NatsTarget:
    # The link may have one partition's batch in flight while it ships others (inflight.py):
    # each subject's first message names its own expected last sequence, so batches of
    # different subjects cannot make a hole in one another; never two of one subject.
    parallel_partitions = True

    def __init__(self, cfg: LinkConfig, node: str, timeout: float = 10.0) -> None:
        assert cfg.nats is not None
        self.name = f"nats stream {cfg.nats.stream}"
        self.cfg = cfg
        self.opts = cfg.nats
        self.node = node
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._nc: Any = None
        self.server = ""  # the NATS server of this session (tried or connected): errors name it
        self.passed_over: list[str] = []  # servers the last connect gave up, each with why
        # Per partition: (stream sequence of the subject's last message, first offset not there).
        self._last: dict[tuple[str, int], tuple[int, int]] = {}
        # The stream's subject filters and the subjects the user may not publish to: kept
        # across sessions (a denial seen in one is probed at the next cursor read).
        self._access = SubjectAccess(cfg.nats.stream, self.name)

    # -- the private event loop ------------------------------------------------------------

    @property
    def where(self) -> str:
        """The stream and the NATS server, as errors name them."""
        return f"{self.name} (NATS server {self.server})" if self.server else self.name

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._wait(self._spawn(coro), timeout)

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> Future[_Outcome[T]]:
        """The coroutine as a task of the private loop whose outcome is always retrieved: a
        caller that gave up on it (a timeout) cancels it, and whatever it ends with then (nats-py
        turns a cancelled read of a closed connection into ConnectionClosedError) is kept in
        the outcome, not left for asyncio's "Task exception was never retrieved"."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(_settled(coro), self._loop)

    def _wait(self, fut: Future[_Outcome[T]], timeout: float | None = None) -> T:
        try:
            ok, value = fut.result(timeout if timeout is not None else self.timeout)
        except TimeoutError:
            fut.cancel()
            raise NatsTimeoutError(f"{self.where}: no answer within "
                                   f"{timeout or self.timeout:.1f} s") from None
        if ok:
            return value  # type: ignore[return-value]
        e = value
        if isinstance(e, EdgebusError):
            raise e
        # nats-py's own errors, and OSError from its transport
        raise mapped_error(e, self.where) from None  # type: ignore[arg-type]

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        """nats-py's own background tasks (its reader, pinger, flusher) may end with an error
        when the server goes silent or the connection is cut; that error also reaches the
        request that needed the connection (and ends the session), so one DEBUG line here, not
        asyncio's ERROR with a traceback."""
        e = ctx.get("exception")
        log.debug("link %s: %s: nats-py background task: %s%s", self.cfg.name, self.where,
                  ctx.get("message", ""), f": {type(e).__name__}: {e}" if e else "")

    # -- Target ----------------------------------------------------------------------------

    def connect(self) -> None:
        import nats  # a dependency of this target only
        import nats.errors

        self.close()
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._loop_exception)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name=f"nats-{self.cfg.name}")
        self._thread.start()
        o = self.opts
        kw: dict[str, Any] = {
            "servers": list(o.servers), "name": f"edgebus-replicator {self.node}/{self.cfg.name}",
            # One connection per session: a failure ends the session and the link reads every
            # cursor again, so nats-py must not reconnect (or buffer publishes) behind our back.
            "allow_reconnect": False, "connect_timeout": self.timeout,
            # allow_reconnect does not cover the TCP connect itself: nats-py retries a server
            # that refuses it (nothing listening) every reconnect_time_wait (2 s) until it was
            # tried max_reconnect_attempts (60) times, so a NATS node down cost the whole bound
            # and read as a timeout. 1 is its least (0 means no limit): one immediate retry.
            "max_reconnect_attempts": 1, "reconnect_time_wait": 0,
            "max_outstanding_pings": 2, "ping_interval": max(1, int(self.cfg.heartbeat_s)),
        }
        if o.user is not None:
            kw.update(user=o.user, password=o.password)
        if o.token is not None:
            kw["token"] = o.token
        if o.creds_file is not None:
            kw["user_credentials"] = o.creds_file
        if o.nkey_seed_file is not None:
            kw["nkeys_seed"] = o.nkey_seed_file
        if self.cfg.tls is not None or o.tls_urls:
            tls = self.cfg.tls
            ctx: ssl.SSLContext = client_context(
                *(None if p is None else str(p) for p in (tls.ca, tls.cert, tls.key))
            ) if tls is not None else ssl.create_default_context()
            kw["tls"] = ctx
            if tls is not None and tls.server_name:
                kw["tls_hostname"] = tls.server_name

        access = self._access
        last: list[Exception] = []  # the last error nats-py reported (why it gave a server up)

        async def errors(e: Exception) -> None:
            # Every error reaches the caller of the failing request (no log per retry); a
            # publish denied is noted, to refuse that subject's partition alone.
            last[:] = [e]
            access.on_error(e)

        kw["error_cb"] = errors

        async def open_one(server: str) -> Any:
            last.clear()
            try:
                return await nats.connect(**{**kw, "servers": [server]})
            except nats.errors.NoServersError:
                # nats-py gave the server up after max_reconnect_attempts and says only "no
                # servers available": the reason is what it reported (connection refused).
                if last:
                    raise last[0] from None
                raise

        # nats-py without reconnects gives up after the first server it tries: try each in
        # turn (shuffled, so that nodes share the links), so a node that is down costs nothing.
        servers = list(o.servers)
        random.shuffle(servers)
        failed: list[tuple[str, EdgebusError]] = []
        for server in servers:
            self.server = server
            try:
                # A second past nats-py's own connect_timeout, so that its answer (refused at
                # once, or a silent server timed out) is the one reported rather than a race
                # between the two bounds.
                self._nc = self._run(open_one(server), self.timeout + 1)
                break
            except AuthenticationError:
                raise
            except EdgebusError as e:
                failed.append((server, e))
        else:
            self.server = ""
            # Sorted: the servers were tried shuffled, and the same trouble should read the
            # same on every retry (one log line per change of trouble); so is the kind: a
            # timeout only when every server was silent.
            cls = (NatsTimeoutError if all(isinstance(e, NatsTimeoutError) for _, e in failed)
                   else NatsUnavailableError)
            raise cls(f"{self.name}: no NATS server of the link answered: "
                      + "; ".join(sorted(self._reasons(failed)))) from None
        # The servers given up before this one, each with why (a NATS node down).
        self.passed_over = self._reasons(failed)
        self._last.clear()
        self._ensure_stream()

    def _reasons(self, failed: list[tuple[str, EdgebusError]]) -> list[str]:
        where = f"{self.name} (NATS server "
        return [f"{server}: {Exception.__str__(e).removeprefix(f'{where}{server}): ')}"
                for server, e in failed]

    async def _api(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        msg = await self._nc.request(subject, json.dumps(body).encode(), timeout=self.timeout)
        return dict(json.loads(msg.data))

    def _ensure_stream(self) -> None:
        o = self.opts
        info = self._run(self._api(f"$JS.API.STREAM.INFO.{o.stream}", {}))
        err = info.get("error")
        if err and err.get("err_code") == ERR_STREAM_NOT_FOUND:
            cfg = {"name": o.stream, "subjects": [f"{o.subject_prefix}.>"], "storage": "file",
                   "num_replicas": o.replicas, "allow_atomic": True,
                   "metadata": {"edgebus_node": self.node}}
            info = self._run(self._api(f"$JS.API.STREAM.CREATE.{o.stream}", cfg))
            err = info.get("error")
        if err:
            raise api_error(err, f"{self.where}: ")
        self._access.filters = list(info.get("config", {}).get("subjects") or [])
        if not info.get("config", {}).get("allow_atomic"):
            raise NotAMirrorError(
                f"{self.name} does not allow atomic batch publish, which the replicator needs "
                "so that a failed batch can never leave a hole; set allow_atomic: true in its "
                "config (nats-server 2.12 or newer)")

    def cursor(self, topic: str, partition: int, source: TopicInfo) -> int:
        problem = C.subject_problem(topic)
        if problem is not None:
            raise IncarnationMismatchError(problem)  # held with this reason, never mixed
        subject = C.subject_for(self.opts.subject_prefix, topic, partition)
        self._check_taken(subject)
        ans = self._run(self._api(f"$JS.API.STREAM.MSG.GET.{self.opts.stream}",
                                  {"last_by_subj": subject}))
        err = ans.get("error")
        if err and err.get("err_code") == ERR_NO_MESSAGE:
            start = source.start_offsets[partition]
            self._last[(topic, partition)] = (0, start)
            return start
        if err:
            raise api_error(err, f"{self.where}: ")
        m = ans["message"]
        h = C.parse_header_block(base64.b64decode(m.get("hdrs", "")))
        mine = C.msg_id(self.node, topic, partition, 0).rsplit("/", 1)[0] + "/"
        if not h.get(C.MSG_ID, "").startswith(mine) or C.RESUME not in h:
            raise NotAMirrorError(
                f"{self.name}: the last message on {subject} (stream sequence {m['seq']}) was not "
                f"written by this link (Nats-Msg-Id {h.get(C.MSG_ID)!r}); another publisher "
                "writes there: give this link its own subject_prefix")
        if h.get(C.INCARNATION) != source.incarnation:
            raise IncarnationMismatchError(
                f"{self.name}: {subject} holds incarnation {h.get(C.INCARNATION)} of topic "
                f"{topic!r}, the source topic is now incarnation {source.incarnation} (deleted "
                "and created again); purge the subject there to start anew")
        offset = int(h[C.MSG_ID].rsplit("/", 1)[1])
        self._last[(topic, partition)] = (int(m["seq"]), offset + 1)
        return int(h[C.RESUME])

    def _check_taken(self, subject: str) -> None:
        """TargetRefusedError when the stream does not take the subject, or the link's user
        was refused publishing to it and still is (nats_refusals.py)."""
        access = self._access
        if not access.takes(subject):
            # The operator may have just added it: the stream's filters are read again.
            info = self._run(self._api(f"$JS.API.STREAM.INFO.{self.opts.stream}", {}))
            if info.get("error"):
                raise api_error(info["error"], f"{self.where}: ")
            access.filters = list(info.get("config", {}).get("subjects") or [])
            if not access.takes(subject):
                raise access.not_taken(subject)
        if access.is_denied(subject) and not self._run(access.probe(self._nc, subject)):
            refusal = access.refusal(subject)
            assert refusal is not None  # the probe saw the denial again
            raise refusal

    def ship(self, topic: str, partition: int, incarnation: str, read: PartitionRead
             ) -> tuple[int, int]:
        """Every record not yet there, as atomic batches, one in flight (ship_begin)."""
        return self.ship_begin(topic, partition, incarnation, read)()

    def ship_begin(self, topic: str, partition: int, incarnation: str, read: PartitionRead
                   ) -> Callable[[], tuple[int, int]]:
        """Sends the read's first atomic batch now and returns finish(), which waits for its
        PubAck and sends the rest one at a time: each encoded while the one before is on its
        way, sent once that one is acknowledged (its first message expects the acknowledged
        sequence). Meanwhile the link reads the next batches from its source (inflight.py);
        one partition never has two batches in flight. finish() returns (the cursor, source
        batches found already there)."""
        key = (topic, partition)
        last_seq, there = self._last[key]
        subject = C.subject_for(self.opts.subject_prefix, topic, partition)
        prefix = C.msg_id(self.node, topic, partition, 0)[:-1]  # "<node>/<topic>/<partition>/"
        already = [0]
        batches = (F.encode_batch(subject, prefix, group, uuid.uuid4().hex, incarnation)
                   for group in F.atomic_groups(topic, partition, read, there, already))
        first = next(batches, None)
        pending = None if first is None else (self._submit(subject, first, last_seq), first.count)

        def finish() -> tuple[int, int]:
            nonlocal pending
            seq = last_seq
            for b in batches:  # the next one is encoded before the wait for the one in flight
                assert pending is not None
                seq = self._acked(subject, *pending)
                pending = self._submit(subject, b, seq), b.count
            if pending is not None:
                seq = self._acked(subject, *pending)
            self._last[key] = (seq, max(there, read.next_offset))
            return read.next_offset, already[0]

        return finish

    def gap(self, topic: str, partition: int, incarnation: str, start: int, end: int,
            reason: int) -> int:
        """Offsets start..end-1 will never be shipped: one marker message on the subject says
        so (header Edgebus-Gap: <start>/<end>/<reason>, the text as payload); its Nats-Msg-Id
        names offset end-1 and Edgebus-Resume is `end`, so the cursor read back from the
        subject's last message moves past the gap (docs/FORMAT.md 7.11)."""
        key = (topic, partition)
        last_seq, _ = self._last[key]
        subject = C.subject_for(self.opts.subject_prefix, topic, partition)
        why = {1: "retention", 2: "max_age"}.get(reason, str(reason))
        text = f"offsets {start}..{end - 1} of {self.node}/{topic}/{partition} never shipped: {why}"
        marker = F.Batch(subject.encode(), 1, None, b"", text.encode(), {
            C.MSG_ID: C.msg_id(self.node, topic, partition, end - 1),
            C.GAP: f"{start}/{end}/{why}", C.RESUME: str(end),
            "Nats-Batch-Id": uuid.uuid4().hex, "Nats-Batch-Sequence": "1",
            C.INCARNATION: incarnation, "Nats-Batch-Commit": "1"})
        last_seq = self._acked(subject, self._submit(subject, marker, last_seq), 1)
        self._last[key] = (last_seq, end)
        return end

    def _submit(self, subject: str, batch: F.Batch, last_seq: int
                ) -> Future[_Outcome[dict[str, Any]]]:
        frames = batch.frames(last_seq)
        return self._spawn(
            self._publish(subject, frames, (batch.last_payload, batch.last_headers)))

    def _acked(self, subject: str, fut: Future[_Outcome[dict[str, Any]]], count: int) -> int:
        """Waits for one atomic batch's PubAck; returns the stream sequence of its last message.
        Any failure ends the session, and the next reads the cursor again (the batch is there
        whole or not at all); a subject the user may not publish to is refused alone."""
        try:
            ack = self._wait(fut, self.timeout + 1)
        except NatsTimeoutError:
            refusal = self._access.refusal(subject)
            if refusal is not None:
                raise refusal from None
            raise
        err = ack.get("error")
        if err:
            raise api_error(err, f"{self.name}: {subject}: ")
        if ack.get("stream") != self.opts.stream or ack.get("count") != count:
            raise NotAMirrorError(f"{self.name}: {subject} was stored by stream "
                                  f"{ack.get('stream')!r} ({ack.get('count')} messages of "
                                  f"{count}): another stream takes these subjects")
        return int(ack["seq"])

    async def _publish(self, subject: str, frames: tuple[bytes, bytes],
                       last: tuple[bytes, dict[str, str]]) -> dict[str, Any]:
        """The batch's frames, then its commit as a request: one connection keeps their order,
        and the commit's answer is the batch's PubAck (or why it was refused whole)."""
        nc = self._nc
        for f in frames:
            if f:
                # nats-py has no public call for frames already encoded; _send_command queues
                # bytes on the connection in order with everything published after them.
                await nc._send_command(f)
        msg = await nc.request(subject, last[0], headers=last[1], timeout=self.timeout)
        return dict(json.loads(msg.data))

    def heartbeat(self, timeout: float | None = None) -> None:
        t = self.timeout if timeout is None else timeout
        self._run(self._nc.flush(t), t + 1)  # PING, PONG

    def commit_group_offsets(self, group_id: str, offsets: dict[tuple[str, int], int]) -> None:
        """Consumer groups are edgebus's; a stream's consumers keep their own positions."""

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        nc, self._nc = self._nc, None

        async def shut() -> None:
            if nc is not None:
                with contextlib.suppress(Exception):  # already broken: nothing to flush
                    await asyncio.wait_for(nc.close(), 2)
            me = asyncio.current_task()
            for t in asyncio.all_tasks():
                if t is not me:
                    t.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shut(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        if not loop.is_running():
            loop.close()


async def _settled(coro: Coroutine[Any, Any, T]) -> tuple[bool, T | BaseException]:
    """(True, result) or (False, the exception): the task itself never ends with an exception
    (a cancellation still cancels it)."""
    try:
        return True, await coro
    except asyncio.CancelledError:
        raise
    except Exception as e:
        return False, e
