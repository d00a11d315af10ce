"""Durable produce answers: a topic deleted in the same loop turn, an answer that does not fit
the client's socket at once.

Moved from tests/review/test_review_findings.py (the review that found these bugs); each test
failed on the code it was written against. Real supervisor processes; SIGSTOP/SIGCONT only orders
events deterministically (the kernel keeps queueing socket data meanwhile).
"""

from __future__ import annotations

import time

import pytest

from edgebus.protocol import messages as M
from edgebus.protocol.framing import ServerProtocol
from tests.server.rawclient import admin, inq, produce, raw, read_frames, req


# --- 1. durable produce + delete topic in one loop turn: the supervisor dies --------------------
@pytest.mark.integration
def test_durable_produce_then_delete_topic_in_one_turn_kills_supervisor(broker):
    """GroupCommitter.start() calls begin_sync() on a partition that delete_topic abandoned in
    the same loop turn: ClosedError escapes serve_forever and the whole supervisor exits."""
    with admin(broker) as a:
        a.create_topic("doomed", 1)
    s = raw(broker)
    s.sendall(produce("doomed", 1, M.ACKS_DURABLE)
              + req(M.Api.DELETE_TOPIC, 2, M.DeleteTopicRequest("doomed")))
    read_frames(s, 1.0, want=2)
    time.sleep(0.5)
    assert broker.proc.poll() is None, (
        "the supervisor died after one client's PRODUCE(durable)+DELETE_TOPIC:\n"
        + broker.log()[-1500:])


# --- 3. durable answer queued without EVENT_WRITE interest is never sent ---------------------
@pytest.mark.integration
def test_durable_ack_that_does_not_fit_the_socket_is_never_sent(broker):
    """_answer_durable queues the response but never calls _update_interest: when the client's
    socket buffer is full, the answer sits in conn.out with no EVENT_WRITE registered and is sent
    only if the client happens to send another request. (acks=written answers do not stall: the
    _process path updates the interest.)"""
    with admin(broker) as a:
        a.create_topic("t", 1)
    s = raw(broker)
    size = len(ServerProtocol.encode_response(1, M.ProduceResponse("t", 0, 0, 0, 0)))
    sent = 0
    for i in range(20_000):
        s.sendall(produce("t", i + 1, M.ACKS_DURABLE))
        sent += 1
        deadline = time.monotonic() + 1.0
        while inq(s) < sent * size and time.monotonic() < deadline:
            time.sleep(0.0002)
        if inq(s) < sent * size:
            break  # our receive side is full: the supervisor had to queue this answer
    # Returns once all came; 30 s bounds the fsyncs of a loaded machine (the fault: never).
    frames = read_frames(s, 30.0, want=sent)
    assert len(frames) == sent, f"{sent} durable produces, {len(frames)} answers ever arrived"
