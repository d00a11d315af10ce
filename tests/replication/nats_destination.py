"""The NATS JetStream destination of the conformance suite: a real 3-node cluster
(nats_cluster.py) and readers of what the stream holds, decoded back into records."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from bridges.replicator.targets import nats_codec as C
from edgebus import BatchReader
from edgebus.errors import BrokerUnavailableError

from .nats_cluster import PASSWORD, USER, NatsCluster

STREAM = "EDGE"
PREFIX = "edgebus.gw-src"
# How long a reader retries a fetch the cluster answered with "no responders" or not at all.
FETCH_PATIENCE_S = 60.0
# How long one read (one connection and consumer) retries its steps before starting over.
STEP_PATIENCE_S = 10.0
# JetStream's "stream not found" (nats-server server/errors.json).
ERR_STREAM_NOT_FOUND = 10059
# JetStream's "no suitable peers for placement" (errors.json): a replicated stream made before
# the meta leader has heard from every node of a just-started cluster ("peer offline").
ERR_NO_PEERS_FOR_PLACEMENT = 10005
T = TypeVar("T")

RecordRow = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]


def source_records(sock: str, topic: str, partition: int) -> list[RecordRow]:
    """Every record of a source partition: (offset, timestamp, key, value, headers)."""
    out: list[RecordRow] = []
    with BatchReader(sock) as r:
        off = r.describe(topic).start_offsets[partition]
        while True:
            got, _, end = r.read(topic, partition, off)
            for b in got:
                out += [(x.offset, x.timestamp, x.key, x.value, tuple(x.headers))
                        for x in b.records(topic, partition)]
            if not got or got[-1].next_offset >= end:
                return out
            off = got[-1].next_offset


async def _connect(urls: list[str]) -> Any:
    import nats

    return await nats.connect(urls, user=USER, password=PASSWORD, allow_reconnect=False,
                              connect_timeout=5, max_reconnect_attempts=1,
                              reconnect_time_wait=0.1)


def _unanswered(e: BaseException) -> bool:
    """A JetStream API call not answered yet: 503 (no responders, or JetStream without a
    leader for the stream or the new consumer: an election after a node restart, a new
    consumer's interest not yet on this client's node) or no answer in time. Seconds under
    load; the reader asks again. Also a stream's creation refused for want of placement peers
    (ERR_NO_PEERS_FOR_PLACEMENT): a cluster just started, at load 15, had not heard from a node
    yet; creating is idempotent."""
    import nats.errors
    from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

    return (isinstance(e, nats.errors.NoRespondersError | nats.errors.TimeoutError
                       | ServiceUnavailableError | NoStreamResponseError)
            or (isinstance(e, APIError) and (e.code in (503, 408)
                                             or e.err_code == ERR_NO_PEERS_FOR_PLACEMENT)))


async def _patiently(step: Callable[[], Awaitable[T]], deadline: float) -> T:
    """step(), asked again while it is unanswered (_unanswered) until the loop's `deadline`."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await step()
        except Exception as e:
            if not _unanswered(e) or loop.time() > deadline:
                raise
        await asyncio.sleep(0.2)


async def publish_patiently(js: Any, subject: str, payload: bytes,
                            headers: dict[str, str] | None = None, *, timeout: float = 2.0,
                            patience_s: float = 30.0) -> Any:
    """A JetStream publish asked again while unanswered (_unanswered) for up to `patience_s`.
    A stream just made, or a cluster just resumed, has the subject's interest on some nodes
    only for a while: a publish there finds no responders (CI at load 15+: a publish right
    after the stream had its leader, and one right after SIGCONT, both refused). Each message
    carries a Nats-Msg-Id (its own unless given), so a retry after a lost acknowledgement is
    deduplicated by the stream rather than stored twice; the down direction drops Nats-*
    headers, so the records are unchanged."""
    h = dict(headers or {})
    h.setdefault(C.MSG_ID, f"test/{uuid.uuid4().hex}")
    deadline = asyncio.get_running_loop().time() + patience_s
    return await _patiently(lambda: js.publish(subject, payload, headers=h, timeout=timeout),
                            deadline)


async def _read_subject(urls: list[str], subject: str, stream: str = STREAM
                        ) -> list[tuple[dict[str, str], bytes, int]]:
    """(headers, payload, stream sequence) of every message on the subject of `stream`, in
    order. Each step
    (the stream info, the consumer's creation, each fetch) is asked again while the cluster
    does not answer it yet (_patiently), and a read that stays unanswered for STEP_PATIENCE_S
    starts over with a new connection and consumer, until FETCH_PATIENCE_S: the test's own
    reader read a 503 after the fault test restarted every node (CI at load 15-28; here at load
    ~20 a consumer's pulls were answered 503 for 30 s, which a new consumer gets past), and
    before that a 503 to the stream info read as an empty subject."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + FETCH_PATIENCE_S
    return await _patiently(
        lambda: _read_subject_once(urls, subject, stream,
                                   min(deadline, loop.time() + STEP_PATIENCE_S)),
        deadline)


async def _read_subject_once(urls: list[str], subject: str, stream: str, deadline: float
                             ) -> list[tuple[dict[str, str], bytes, int]]:
    from nats.js.api import AckPolicy, ConsumerConfig
    from nats.js.errors import APIError

    nc = await _connect(urls)
    try:
        async def info() -> dict[str, Any]:
            r = await nc.request(f"$JS.API.STREAM.INFO.{stream}",
                                 json.dumps({"subjects_filter": subject}).encode(), timeout=5)
            d: dict[str, Any] = json.loads(r.data)
            if "error" in d and d["error"].get("err_code") != ERR_STREAM_NOT_FOUND:
                APIError.from_error(d["error"])  # raises: a 503 is asked again, others not
            return d

        d = await _patiently(info, deadline)
        if "error" in d:  # no stream (yet): nothing on the subject
            return []
        count = int((d["state"].get("subjects") or {}).get(subject, 0))
        if not count:
            return []
        js = nc.jetstream()
        sub = await _patiently(lambda: js.pull_subscribe(
            subject, stream=stream, config=ConsumerConfig(ack_policy=AckPolicy.NONE)), deadline)
        out: list[tuple[dict[str, str], bytes, int]] = []
        try:
            while len(out) < count:
                async def fetch(n: int = min(5000, count - len(out))) -> list[Any]:
                    return list(await sub.fetch(n, timeout=5))

                got = await _patiently(fetch, deadline)
                out += [(dict(m.headers or {}), m.data, m.metadata.sequence.stream) for m in got]
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.close()


class NatsDestination:
    """A JetStream stream on a real 3-node cluster; kill9/restart act on one hub node each time
    (in turn), so the cluster keeps its quorum while a node is down."""

    kind = "nats"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cluster = NatsCluster(root / "nats").start()
        self.port = self.cluster.nodes[0].port
        self.address = self.cluster.nodes[0].url
        self._turn = itertools.cycle(range(len(self.cluster.nodes)))
        self._down: int | None = None

    def link_config(self, root: Path, token: str = "", servers: list[str] | None = None
                    ) -> dict[str, Any]:
        from .conftest import TOKEN, secret

        pw = secret(root / f"nats-password-{id(self)}-{token[:4]}", PASSWORD if token in ("", TOKEN)
                    else token)
        # heartbeat_s 1: requests wait at most 2 s. A publish to a stream leader killed by the
        # test is never answered; the link gives up on it after that long and reads the cursor.
        return {"target": "nats", "servers": servers or self.cluster.urls, "stream": STREAM,
                "subject_prefix": PREFIX, "replicas": 3, "user": USER, "password_file": str(pw),
                "heartbeat_s": 1}

    def via(self, addresses: list[str]) -> dict[str, Any]:
        """Link keys that send the link through these relays instead."""
        return {"servers": [f"nats://{a}" for a in addresses]}

    def subject(self, topic: str, partition: int) -> str:
        return C.subject_for(PREFIX, topic, partition)

    def messages(self, topic: str, partition: int) -> list[tuple[dict[str, str], bytes, int]]:
        return asyncio.run(_read_subject([n.url for n in self.cluster.nodes if n.proc],
                                         self.subject(topic, partition)))

    def records(self, topic: str, partition: int) -> list[RecordRow]:
        out: list[RecordRow] = []
        for h, payload, _ in self.messages(topic, partition):
            off, ts, key, value, headers = C.decode(h, payload)
            out.append((off, ts, key, value, tuple(headers)))
        return out

    def same_as_source(self, source_socket: str, topic: str, partition: int) -> bool:
        with BatchReader(source_socket) as r:
            if self.end(topic, partition) != r.describe(topic).end_offsets[partition]:
                return False  # cheap: not there yet (the full comparison reads everything)
        return source_records(source_socket, topic, partition) == self.records(topic, partition)

    # The conformance suite's comparison (tests/replication/test_conformance.py in_step): the
    # records, each with its source offset, against the source's.
    def contents(self, topic: str, partition: int) -> list[RecordRow]:
        return self.records(topic, partition)

    def expected(self, source: Any, topic: str, partition: int) -> list[RecordRow]:
        return source_records(source.socket, topic, partition)

    def source_end(self, topic: str, partition: int) -> int:
        return self.end(topic, partition)

    def end(self, topic: str, partition: int) -> int:
        """The offset after the subject's last record (0 when there is none)."""
        async def last() -> int:
            nc = await _connect([n.url for n in self.cluster.nodes if n.proc])
            try:
                r = await nc.request(f"$JS.API.STREAM.MSG.GET.{STREAM}", json.dumps(
                    {"last_by_subj": self.subject(topic, partition)}).encode(), timeout=0.5)
                d = json.loads(r.data)
                if "error" in d:
                    return 0
                import base64

                h = C.parse_header_block(base64.b64decode(d["message"]["hdrs"]))
                return int(h[C.MSG_ID].rsplit("/", 1)[1]) + 1
            finally:
                await nc.close()

        try:
            return asyncio.run(last())
        except Exception as e:  # the cluster is busy or a node restarts: ask again
            raise BrokerUnavailableError(f"NATS: {type(e).__name__}: {e}") from None

    def refusal_logged(self) -> bool:
        return any("Authorization Violation" in n.log() or "authentication error" in n.log()
                   for n in self.cluster.nodes)

    def kill9(self) -> None:
        self._down = next(self._turn)
        self.cluster.nodes[self._down].kill9()

    def restart(self) -> None:
        if self._down is not None:
            self.cluster.nodes[self._down].start()
            self._down = None
        self.cluster.wait_ready()

    def close(self) -> None:
        self.cluster.close()
