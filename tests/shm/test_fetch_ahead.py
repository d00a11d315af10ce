"""Fetch-ahead (edgebus/client/fetch_ahead.py): the guess is the fetch a consumer sends next, and a
consumer that seeks or changes its assignment meanwhile still reads exactly what it asked for."""

from __future__ import annotations

import time

import pytest

from edgebus import Admin, Consumer, Producer, TopicPartition
from edgebus import batch as B
from edgebus.client.fetch_ahead import fetch_key, is_empty, next_fetch
from edgebus.protocol import messages as M


def batch_at(base: int, n: int) -> bytes:
    data = bytearray(B.build_batch([B.encode_record(1, None, b"v", ())] * n, 1, 1))
    B.stamp_batch(data, base, 1)
    return bytes(data)


@pytest.mark.unit
def test_next_fetch_moves_each_offset_past_the_whole_batches_received():
    req = M.FetchRequest(500, 1, 1 << 20, [M.FetchPartition("t", 0, 10, 4096),
                                            M.FetchPartition("t", 1, 7, 4096)])
    chunk = batch_at(10, 3) + batch_at(13, 2) + batch_at(15, 4)[:30]  # a partial batch at the end
    resp = M.FetchResponse([M.FetchedPartition("t", 0, 0, "", 99, 0, chunk),
                            M.FetchedPartition("t", 1, 0, "", 7, 0, b"")])
    guess = next_fetch(req, resp)
    assert guess is not None and guess.max_wait_ms == 0  # the default: never parks
    assert [(p.partition, p.offset) for p in guess.partitions] == [(0, 15), (1, 7)]
    assert fetch_key(guess) == fetch_key(M.FetchRequest(123, 1, 1 << 20, guess.partitions))
    assert fetch_key(guess) != fetch_key(req)


@pytest.mark.unit
def test_no_guess_without_data_or_with_an_error():
    req = M.FetchRequest(500, 1, 1 << 20, [M.FetchPartition("t", 0, 10, 4096)])
    empty = M.FetchResponse([M.FetchedPartition("t", 0, 0, "", 10, 0, b"")])
    assert next_fetch(req, empty) is None and is_empty(empty)
    err = M.FetchResponse([M.FetchedPartition("t", 0, 10, "out of range", 5, 0, batch_at(10, 1))])
    assert next_fetch(req, err) is None


@pytest.mark.integration
def test_seeks_between_polls_are_honoured(broker):
    with Admin(socket=broker.socket) as a:
        a.create_topic("fa", 1)
    # Small batches (the default is 256 KiB): several fetches per target, so guesses are made.
    with Producer(socket=broker.socket, batch_size=2048) as p:
        for i in range(50):
            p.send_batch("fa", [f"{i}:{j}".encode() for j in range(100)], partition=0)
        p.flush(10)
    tp = TopicPartition("fa", 0)
    c = Consumer(socket=broker.socket, transport="shm", auto_offset_reset="earliest",
                 max_partition_fetch_bytes=2000)
    c.assign([tp])
    deadline = time.monotonic() + 30
    for target in [0, 4000, 100, 4900, 2500, 4999]:  # several fetches per target (2500 records)
        c.seek(tp, target)  # discards any guess made for the old position
        want = list(range(target, min(target + 2500, 5000)))
        got: list[int] = []
        while len(got) < len(want) and time.monotonic() < deadline:
            got += [r.offset for r in c.poll(500).get(tp, [])]
        assert got[: len(want)] == want
    hits = c._ch.fetch_ahead_hits
    c.close()
    assert hits > 0, "fetch-ahead never answered a poll"
