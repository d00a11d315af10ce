"""The NATS JetStream destination of the conformance suite: a real 3-node cluster
(nats_cluster.py) and readers of what the stream holds, decoded back into records."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

from bridges.replicator.targets import nats_codec as C
from edgebus import BatchReader
from edgebus.errors import BrokerUnavailableError

from .nats_cluster import PASSWORD, USER, NatsCluster

STREAM = "EDGE"
PREFIX = "edgebus.gw-src"
# How long a reader retries a fetch the cluster answered with "no responders" or not at all.
FETCH_PATIENCE_S = 30.0

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


async def _read_subject(urls: list[str], subject: str) -> list[tuple[dict[str, str], bytes, int]]:
    """(headers, payload, stream sequence) of every message on the subject, in order."""
    nc = await _connect(urls)
    try:
        info = await nc.request(f"$JS.API.STREAM.INFO.{STREAM}",
                                json.dumps({"subjects_filter": subject}).encode(), timeout=5)
        d = json.loads(info.data)
        if "error" in d:
            return []
        count = int((d["state"].get("subjects") or {}).get(subject, 0))
        if not count:
            return []
        import nats.errors
        from nats.js.api import AckPolicy, ConsumerConfig
        from nats.js.errors import ServiceUnavailableError

        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, stream=STREAM,
                                      config=ConsumerConfig(ack_policy=AckPolicy.NONE))
        out: list[tuple[dict[str, str], bytes, int]] = []
        deadline = asyncio.get_running_loop().time() + FETCH_PATIENCE_S
        try:
            while len(out) < count:
                try:
                    got = await sub.fetch(min(5000, count - len(out)), timeout=5)
                except (ServiceUnavailableError, nats.errors.TimeoutError):
                    # 503 "no responders": the new consumer's interest has not reached the
                    # node this client is on yet (route propagation; seconds under load).
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.2)
                    continue
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
