"""Faults the replication tests inject while producers send: a list of named events run in turn
(link cuts and half-open links through relay.Relay, SIGKILLs of any process), and a producer that
keeps sending across restarts of its supervisor."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from edgebus import Producer
from edgebus.errors import EdgebusError


class Restartable(Protocol):
    def kill9(self) -> Any: ...
    def start(self) -> Any: ...


def kill9_restart(proc: Restartable) -> None:
    """SIGKILL, then start again at once (the replicator, a supervisor)."""
    proc.kill9()
    proc.start()


def inject(events: Iterable[str], actions: Mapping[str, Callable[[], object]],
           pause: float) -> None:
    """actions[event] for each event in turn, `pause` seconds after the one before."""
    for what in events:
        time.sleep(pause)
        actions[what]()


def keep_producing(socket: str, topic: str, stop: threading.Event, sent: list[int], *,
                   per_round: int, value: Callable[[int], bytes], key: Callable[[int], bytes],
                   partitions: int | None = None, seq_header: bool = True,
                   pause: float = 0.005) -> None:
    """Rounds of `per_round` records (value(n) for the n-th sent, key(i) for the i-th of its
    round, partition i % partitions when given, a `seq` header) until `stop` is set, flushed
    each round; sent[0] counts the records of the rounds flushed. Connects again after the
    supervisor dies, so it outlives restarts of the source."""
    while not stop.is_set():
        try:
            with Producer(socket=socket, linger_ms=2) as p:
                while not stop.is_set():
                    for i in range(per_round):
                        n = sent[0] + i
                        p.send(topic, value(n), key=key(i),
                               headers=[("seq", str(n).encode())] if seq_header else None,
                               partition=None if partitions is None else i % partitions)
                    p.flush(10)
                    sent[0] += per_round
                    time.sleep(pause)
        except EdgebusError:
            time.sleep(0.1)  # the supervisor is restarting

