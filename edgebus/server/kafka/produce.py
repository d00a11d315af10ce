"""Kafka Produce (v3-v9): record batches converted (records.py) and appended through the
supervisor's own produce path (DataHandlers.produce_fields: the same checks, disk watermarks,
stats and wake-ups of parked fetches as a native PRODUCE).

acks: 0 -> none (no answer), 1 -> written (the batch is in the segment file), -1 -> durable
(answered after the group commit's fsync covers every partition of the request).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from edgebus import format as F
from edgebus.errors import EdgebusError, RecordTooLargeError
from edgebus.protocol import messages as M
from edgebus.server.kafka.apis import DEFERRED, NO_RESPONSE
from edgebus.server.kafka.authz import may
from edgebus.server.kafka.codec import kafka_error
from edgebus.server.kafka.hot import produce_response
from edgebus.server.kafka.records import UnsupportedBatchError, kafka_batches
from edgebus.server.txn.mark import built_info
from edgebus.server.txn.mark import mark as txn_mark
from edgebus.server.txn.producers import APPEND, ProducerStates

if TYPE_CHECKING:
    from edgebus.server.kafka.context import KafkaContext
    from edgebus.server.listeners.stream import Connection

log = logging.getLogger("edgebus.kafka")

PRODUCE = 0


def producers(ctx: KafkaContext) -> ProducerStates:
    """The supervisor's one ProducerStates (the Broker's, shared with native producers)."""
    states: ProducerStates | None = ctx.parts.get("producers")
    if states is None:
        states = ctx.parts["producers"] = ProducerStates()
    return states


class _Result:
    __slots__ = ("base", "error", "message", "partition")

    def __init__(self, partition: Any = None, base: int = -1, error: int = 0, message: str | None = None):
        self.partition, self.base, self.error, self.message = partition, base, error, message


def produce(ctx: KafkaContext, conn: Connection, header: Any, req: Any) -> Any:
    acks = req.acks
    results: list[tuple[str, list[tuple[int, _Result]]]] = []
    for t in req.topic_data:
        parts = []
        for pd in t.partition_data:
            if acks not in (0, 1, -1):
                r = _Result(error=ErrorCode.invalid_required_acks, message=f"acks {acks}")
            elif (denied := may(ctx, conn, "write", t.name)) is not None:  # access control
                r = _Result(error=ErrorCode.topic_authorization_failed, message=denied)
            else:
                r = _append(ctx, conn, header.correlation_id, t.name, pd.index, pd.records,
                            req.transactional_id)
            parts.append((pd.index, r))
        results.append((t.name, parts))
    if acks == 0:
        return NO_RESPONSE
    version, corr = header.request_api_version, header.correlation_id
    if acks == -1:
        synced = {id(r.partition): r.partition for _, ps in results for _, r in ps
                  if r.partition is not None}
        if synced:
            def respond() -> bytes:
                return _response(version, corr, results)

            def failed(err: BaseException) -> bytes:
                code = kafka_error(err)
                for _, ps in results:
                    for _, r in ps:
                        if r.partition is not None:
                            r.error, r.base, r.message = code, -1, f"fsync failed: {err}"
                return respond()

            ctx.durable.add_after_sync(conn, corr, list(synced.values()), respond, failed)
            return DEFERRED
    return _response(version, corr, results)


def _response(version: int, corr: int, results: list[tuple[str, list[tuple[int, _Result]]]]) -> bytes:
    """The answer's frame (hot.py writes it in one pass: this is every produce request's)."""
    return produce_response(version, corr, [
        (name, [(index, int(r.error), r.base,
                 r.partition.log_start_offset if r.partition is not None else -1, r.message)
                for index, r in parts])
        for name, parts in results])


def _append(ctx: KafkaContext, conn: Connection, corr: int, topic: str, partition: int,
            records: bytes | None, tid: str | None = None) -> _Result:
    """Convert and append one partition's batches; the first batch's base offset."""
    try:
        if records is None:
            return _Result(error=ErrorCode.corrupt_message, message="null records")
        p = ctx.logs.partition(topic, partition)
        limit = p.config.max_message_bytes
        if len(records) > limit + 1024:  # as Kafka: the batch as sent, against max.message.bytes
            raise RecordTooLargeError(f"a batch of {len(records)} bytes exceeds the topic's "
                                      f"max_message_bytes {limit}")
        states = producers(ctx)
        first = -1
        convs = kafka_batches(records, max_bytes=limit)
        if tid is not None:  # a transaction's batches (txn.py): checked, marked, their start kept
            txn = ctx.parts["txn"]
            code = txn.check_produce(tid, convs[0].producer_id, convs[0].producer_epoch,
                                     (topic, partition))
            if code:
                return _Result(p, -1, code, "not in a transaction of this producer")
            txn.before_append(tid, (topic, partition), p.log_end_offset)
            for conv in convs:
                for piece, _n in conv.pieces:
                    txn_mark(piece, F.ATTR_TRANSACTIONAL)
        for conv in convs:
            verdict = states.check(p, conv.producer_id, conv.producer_epoch, conv.base_sequence,
                                   conv.count)
            if verdict is not APPEND:
                if verdict.error:
                    return _Result(p, -1, verdict.error, "sequence check failed")
                base = verdict.duplicate_of  # a retry: answered with the offset it got first
            else:
                base = -1
                seq = conv.base_sequence
                for piece, n in conv.pieces:
                    resp = ctx.data.produce_fields(conn, corr, topic, partition, M.ACKS_WRITTEN,
                                                   piece, False, built_info(piece))
                    if base < 0:
                        base = resp.base_offset
                    states.appended(p, conv.producer_id, conv.producer_epoch, seq, n, resp.base_offset)
                    if seq >= 0:
                        seq += n
            if first < 0:
                first = base
        return _Result(p, first)
    except UnsupportedBatchError as e:
        return _Result(None, -1, ErrorCode.unsupported_for_message_format, str(e))
    except EdgebusError as e:
        return _Result(None, -1, kafka_error(e), str(e))
