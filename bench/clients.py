"""Client setups the benchmarks' child processes share (the public API only).

Kept here, not copied into each benchmark, so that every benchmark's consumer is the same one:
a figure of bench.wakeups and one of bench.hops then speak of the same client settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgebus import Consumer



def tail_consumer(sock: str, transport: str, topic: str, *, tuned: bool = True) -> Consumer:
    """A Consumer assigned partition 0 of `topic` and positioned at its end (it receives what is
    sent from now on), with the paced benchmarks' settings (bench/run.py's edgebus rows: a 100 ms
    long-poll, 1 MiB fetches, no cap on the records one poll returns, so that a poll takes
    whatever has arrived) or, tuned=False, the library's defaults. The position is resolved here,
    before the caller says it is ready, so that no record sent after that is missed and no first
    poll pays for the lookup."""
    from edgebus import Consumer, TopicPartition

    if tuned:
        c = Consumer(socket=sock, transport=transport, auto_offset_reset="latest",
                     fetch_max_wait_ms=100, max_partition_fetch_bytes=1 << 20,
                     fetch_max_bytes=1 << 20, max_poll_records=1_000_000)
    else:
        c = Consumer(socket=sock, transport=transport, auto_offset_reset="latest")
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_end(tp)
    c.position(tp)
    return c
