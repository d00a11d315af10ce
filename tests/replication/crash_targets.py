"""The crash trial's targets (crash_trial.py): each destination's link settings, its faults (a
SIGKILL and restart, the relays a cut goes through) and what it holds, read back as source
records (offset, timestamp, key, value, headers)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgebus import Admin, Consumer, TopicPartition
from edgebus.testing import EmbeddedBroker, free_port

from .relay import Relay

TARGETS = ("peer", "kafka", "kafka-edgebus", "nats")
TOPIC = "trial"
SOURCE_HEADER = "edgebus-source"  # the Kafka target's header (docs/FORMAT.md 7.10)
# (offset at the source, timestamp, key, value, headers): what must arrive intact
Row = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]


class Target:
    """One destination: its link settings, its faults, and what it holds."""

    name = ""
    can_kill = True

    def link(self) -> dict[str, Any]:
        raise NotImplementedError

    def relays(self) -> list[Relay]:
        raise NotImplementedError

    def kill9_restart(self) -> None:
        raise NotImplementedError

    def rows(self, partition: int) -> list[Row]:
        """Every record the target holds for the source partition, in its order, each with the
        source offset it names (duplicates kept)."""
        raise NotImplementedError

    def end(self, partition: int) -> int:
        """The next source offset the target expects (its cursor as the replicator reads it)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class PeerTarget(Target):
    name = "peer"

    def __init__(self, root: Path) -> None:
        from .conftest import PeerDestination

        self.dest = PeerDestination(lambda config=None, name="dst": EmbeddedBroker(
            root / name, config=config), root)
        self.relay = Relay(("127.0.0.1", self.dest.port))
        self.root = root

    def link(self) -> dict[str, Any]:
        return {**self.dest.link_config(self.root), "address": self.relay.address}

    def relays(self) -> list[Relay]:
        return [self.relay]

    def kill9_restart(self) -> None:
        self.dest.kill9()
        self.dest.restart()

    def rows(self, partition: int) -> list[Row]:
        return list(self.dest.records(TOPIC, partition))

    def end(self, partition: int) -> int:
        return int(self.dest.end(TOPIC, partition))

    def close(self) -> None:
        self.relay.close()
        self.dest.broker.cleanup()


def _split_source(rows: list[tuple[bytes | None, Row]]) -> list[Row]:
    out = []
    for src, (_, ts, k, v, h) in rows:
        if src is None:
            out.append((-1, ts, k, v, h))  # not the replicator's: counted as foreign
            continue
        _node, _topic, _p, off, _inc = src.decode().split("/")
        out.append((int(off), ts, k, v, h))
    return out


class TansuTarget(Target):
    name = "kafka"
    can_kill = False  # memory storage: a restarted Tansu is empty (no other engine in the wheel)

    def __init__(self, root: Path) -> None:
        from .kafka import KafkaDestination

        self.dest = KafkaDestination(root)

    def link(self) -> dict[str, Any]:
        return self.dest.link_config(Path("."))

    def relays(self) -> list[Relay]:
        return [self.dest.relay]

    def rows(self, partition: int) -> list[Row]:
        return _split_source(self.dest.rows(TOPIC, partition))

    def end(self, partition: int) -> int:
        return int(self.dest.source_end(TOPIC, partition))

    def close(self) -> None:
        self.dest.close()


class EdgebusKafkaTarget(Target):
    """Another edgebus supervisor, reached over its Kafka listener (advertised as the relay's
    address, so that every connection of librdkafka goes through the relay)."""

    name = "kafka-edgebus"

    def __init__(self, root: Path) -> None:
        port = free_port()
        self.relay = Relay(("127.0.0.1", port))
        self.broker = EmbeddedBroker(root / "kdst", config={"kafka": {
            "listeners": [f"127.0.0.1:{port}"], "advertised": self.relay.address}})
        self.broker.start()

    def link(self) -> dict[str, Any]:
        return {"target": "kafka", "address": self.relay.address}

    def relays(self) -> list[Relay]:
        return [self.relay]

    def kill9_restart(self) -> None:
        self.broker.kill9()
        self.broker.start()

    def _all(self, partition: int) -> list[tuple[bytes | None, Row]]:
        with Consumer(socket=self.broker.socket, auto_offset_reset="earliest",
                      consumer_timeout_ms=1000) as c:
            c.assign([TopicPartition(TOPIC, partition)])
            out = []
            for r in c:
                src = [v for k, v in r.headers if k == SOURCE_HEADER]
                rest = tuple((k, v) for k, v in r.headers if k != SOURCE_HEADER)
                out.append((src[0] if len(src) == 1 else None,
                            (-1, r.timestamp, r.key, r.value, rest)))
            return out

    def rows(self, partition: int) -> list[Row]:
        return _split_source(self._all(partition))

    def end(self, partition: int) -> int:
        with Admin(socket=self.broker.socket) as a:
            if TOPIC not in a.list_topics():
                return 0
            d = a.describe_topic(TOPIC).partitions[partition]
            if d.log_end_offset <= d.log_start_offset:
                return 0
        from edgebus import BatchReader

        with BatchReader(self.broker.socket) as r:
            got, _, _ = r.read(TOPIC, partition, d.log_end_offset - 1)
            last = got[-1].records(TOPIC, partition)[-1]
        src = [v for k, v in last.headers if k == SOURCE_HEADER and v is not None]
        return int(src[0].decode().split("/")[3]) + 1

    def close(self) -> None:
        self.relay.close()
        self.broker.cleanup()


class NatsTarget(Target):
    name = "nats"

    def __init__(self, root: Path) -> None:
        from .nats_destination import (
            ERR_NO_PEERS_FOR_PLACEMENT,
            FETCH_PATIENCE_S,
            PREFIX,
            STREAM,
            NatsDestination,
            _connect,
            _patiently,
        )

        self.dest = NatsDestination(root)
        self.root = root
        self._relays = [Relay(("127.0.0.1", n.port)) for n in self.dest.cluster.nodes]

        async def make_stream() -> dict[str, Any]:
            from nats.js.errors import APIError

            nc = await _connect(self.dest.cluster.urls)
            try:
                async def once() -> dict[str, Any]:
                    # A 1 s dedup window: only resuming from the subject's last message, not
                    # Nats-Msg-Id dedup, can keep doubles out (as test_nats_target.py's).
                    r = await nc.request(f"$JS.API.STREAM.CREATE.{STREAM}", json.dumps({
                        "name": STREAM, "subjects": [f"{PREFIX}.>"], "storage": "file",
                        "num_replicas": 3, "allow_atomic": True,
                        "duplicate_window": 1_000_000_000}).encode(), timeout=10)
                    d = dict(json.loads(r.data))
                    err = d.get("error", {})
                    if (err.get("code") == 503
                            or err.get("err_code") == ERR_NO_PEERS_FOR_PLACEMENT):
                        APIError.from_error(err)  # raises: a cluster just started, asked again
                    return d

                # Asked again while unanswered (nats_destination._unanswered): idempotent.
                return await _patiently(
                    once, asyncio.get_running_loop().time() + FETCH_PATIENCE_S)
            finally:
                await nc.close()

        made = asyncio.run(make_stream())
        assert "error" not in made, made

    def link(self) -> dict[str, Any]:
        return {**self.dest.link_config(self.root), "heartbeat_s": 0.5,
                "servers": [f"nats://{r.address}" for r in self._relays]}

    def relays(self) -> list[Relay]:
        return self._relays

    def kill9_restart(self) -> None:
        self.dest.kill9()  # one node, in turn: the stream keeps its quorum
        time.sleep(0.3)
        self.dest.restart()

    def rows(self, partition: int) -> list[Row]:
        return [(o, ts, k, v, h) for o, ts, k, v, h in self.dest.records(TOPIC, partition)]

    def end(self, partition: int) -> int:
        return int(self.dest.end(TOPIC, partition))

    def close(self) -> None:
        for r in self._relays:
            r.close()
        self.dest.close()


def make_target(name: str, root: Path) -> Target:
    kinds: dict[str, Callable[[Path], Target]] = {
        "peer": PeerTarget, "kafka": TansuTarget, "kafka-edgebus": EdgebusKafkaTarget,
        "nats": NatsTarget}
    return kinds[name](root)
