"""The group APIs byte by byte: the consumer-protocol codec against kafka-python's own encoder,
and the typed Kafka errors for what edgebus's coordinator cannot or will not do."""

from __future__ import annotations

import io
import socket
import struct
import time
from typing import Any

import pytest
from kafka.protocol.old.consumer_protocol import (
    ConsumerProtocolMemberAssignment_v0,
    ConsumerProtocolMemberMetadata_v0,
)
from kio.index import load_payload_module
from kio.schema.consumer_protocol_subscription.v3 import data as sub_v3
from kio.serial import entity_writer
from kio.static.constants import EntityType

from edgebus.errors import InvalidRequestError
from edgebus.server.kafka.consumer_protocol import (
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import connect, create_topic, read_frame

JOIN, SYNC, HEARTBEAT, OFFSET_COMMIT, FIND_COORDINATOR = 11, 14, 12, 8, 10


def _subscription_v3(topics: list[str], owned: dict[str, list[int]]) -> bytes:
    buf = io.BytesIO()
    buf.write(struct.pack(">h", 3))
    entity_writer(sub_v3.ConsumerProtocolSubscription)(buf, sub_v3.ConsumerProtocolSubscription(
        topics=tuple(topics), user_data=None, generation_id=4, rack_id=None,
        owned_partitions=tuple(sub_v3.TopicPartition(topic=t, partitions=tuple(ps))  # type: ignore[arg-type]
                               for t, ps in owned.items())))
    return buf.getvalue()


@pytest.mark.unit
def test_consumer_protocol_against_kafka_pythons_encoder() -> None:
    sub = decode_subscription(ConsumerProtocolMemberMetadata_v0(0, ["a", "b"], b"x").encode())
    assert sub.topics == ("a", "b") and sub.owned == ()
    sub = decode_subscription(_subscription_v3(["a"], {"a": [2, 0]}))
    assert sub.topics == ("a",) and sub.owned == (("a", 2), ("a", 0))
    # A newer version than kio knows is read with the newest schema, trailing fields ignored.
    newer = b"\x00\x07" + _subscription_v3(["a"], {})[2:] + b"\x00\x00\x00\x09"
    assert decode_subscription(newer).topics == ("a",)
    got = ConsumerProtocolMemberAssignment_v0.decode(encode_assignment([("b", 1), ("a", 3), ("a", 0)]))
    assert got.version == 0 and [(t, ps) for t, ps in got.assigned_partitions] == [("a", [0, 3]), ("b", [1])]
    assert ConsumerProtocolMemberMetadata_v0.decode(encode_subscription(["x", "a"])).topics == ["a", "x"]


@pytest.mark.unit
def test_every_truncation_of_a_subscription_is_a_typed_error() -> None:
    whole = _subscription_v3(["topic-a", "topic-b"], {"topic-a": [0, 1]})
    for n in range(len(whole)):
        try:
            decode_subscription(whole[:n])
        except InvalidRequestError:
            continue
        # A cut that still parses is allowed only where the rest is optional (none here).
        pytest.fail(f"a subscription cut to {n} of {len(whole)} bytes decoded")
    assert decode_subscription(whole).topics == ("topic-a", "topic-b")
    with pytest.raises(InvalidRequestError, match="negative"):
        decode_subscription(b"\xff\xff")
    # A topics array claiming 2**31 - 1 entries: refused before kio allocates for them.
    with pytest.raises(InvalidRequestError, match="array length 2147483647"):
        decode_subscription(b"\x00\x00\x7f\xff\xff\xff")


# --- raw requests to a real supervisor -----------------------------------------------------------
def _request(s: socket.socket, api_key: int, version: int, corr: int, **body: Any) -> Any:
    req_mod = load_payload_module(api_key, version, EntityType.request)
    resp_mod = load_payload_module(api_key, version, EntityType.response)
    req_cls = next(v for v in vars(req_mod).values() if isinstance(v, type)
                   and getattr(v, "__type__", None) is EntityType.request)
    resp_cls = next(v for v in vars(resp_mod).values() if isinstance(v, type)
                    and getattr(v, "__type__", None) is EntityType.response)
    from tests.kafka_listener.conftest import parse_response, raw_request

    s.sendall(raw_request(api_key, version, corr, req_cls(**body)))
    got_corr, resp = parse_response(read_frame(s), resp_cls, flexible_header=req_cls.__flexible__)
    assert got_corr == corr
    return resp


def _join(s: socket.socket, corr: int, protocols: list[tuple[str, bytes]], session_ms: int = 10_000,
          member_id: str = "", protocol_type: str = "consumer") -> Any:
    import datetime

    from kio.schema.join_group.v9.request import JoinGroupRequestProtocol

    return _request(s, JOIN, 9, corr, group_id="g", member_id=member_id, group_instance_id=None,
                    protocol_type=protocol_type, reason=None,
                    session_timeout=datetime.timedelta(milliseconds=session_ms),
                    rebalance_timeout=datetime.timedelta(milliseconds=30_000),
                    protocols=tuple(JoinGroupRequestProtocol(name=n, metadata=m) for n, m in protocols))


@pytest.mark.integration
def test_join_sync_heartbeat_and_typed_refusals(kbroker: EmbeddedBroker) -> None:
    create_topic(kbroker, "t", partitions=3)
    sub = ConsumerProtocolMemberMetadata_v0(0, ["t"], b"").encode()
    with connect(kbroker) as s:
        fc = _request(s, FIND_COORDINATOR, 4, 1, key_type=0, coordinator_keys=("g",))
        host, port = kbroker.kafka_bootstrap.rsplit(":", 1)
        assert [(c.key, c.node_id, c.host, c.port, c.error_code) for c in fc.coordinators] == [
            ("g", 0, host, int(port), 0)]
        fc = _request(s, FIND_COORDINATOR, 4, 2, key_type=1, coordinator_keys=("tx",))
        assert [(c.key, c.node_id, c.error_code) for c in fc.coordinators] == [("tx", 0, 0)]

        # A foreign protocol type, a garbage subscription: refused, the group untouched. (Only
        # protocols edgebus does not know make a leader-assigned group: test_groups_leader.py.)
        assert _join(s, 4, [("range", sub)], protocol_type="connect").error_code == 23
        assert _join(s, 5, [("range", b"\x00\x00\xff")]).error_code == 23  # garbage subscription
        assert _join(s, 6, [("range", sub)], session_ms=10).error_code == 26  # INVALID_SESSION_TIMEOUT

        # A good join: this member is not the leader (the coordinator assigns), its own name for
        # the assignor comes back.
        j = _join(s, 7, [("cooperative-sticky", sub), ("roundrobin", sub)])
        assert (j.error_code, j.protocol_name, j.generation_id) == (0, "roundrobin", 1)
        assert j.leader != j.member_id and j.members == ()
        sync = _request(s, SYNC, 5, 8, group_id="g", generation_id=1, member_id=j.member_id,
                        group_instance_id=None, protocol_type="consumer", protocol_name="roundrobin",
                        assignments=())
        assert sync.error_code == 0
        got = ConsumerProtocolMemberAssignment_v0.decode(sync.assignment)
        assert [(t, ps) for t, ps in got.assigned_partitions] == [("t", [0, 1, 2])]
        hb = _request(s, HEARTBEAT, 4, 9, group_id="g", generation_id=0, member_id=j.member_id,
                      group_instance_id=None)
        assert hb.error_code == 22  # ILLEGAL_GENERATION
        hb = _request(s, HEARTBEAT, 4, 10, group_id="g", generation_id=1, member_id="nobody",
                      group_instance_id=None)
        assert hb.error_code == 25  # UNKNOWN_MEMBER_ID
        hb = _request(s, HEARTBEAT, 4, 11, group_id="g", generation_id=1, member_id=j.member_id,
                      group_instance_id=None)
        assert hb.error_code == 0
    # The connection closed: the member is gone at once, the supervisor serves on.
    from edgebus import Admin

    with Admin(socket=kbroker.socket) as a:
        deadline = time.monotonic() + 30  # the close reaches the loop in its own time
        while a.list_groups() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.list_groups() == []
