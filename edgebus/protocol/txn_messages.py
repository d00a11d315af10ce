"""The idempotent and transactional producers' bodies (INIT_PRODUCER_ID .. LIST_TRANSACTIONS:
docs/FORMAT.md 7.12); their keys are messages.Api's, the table registry.py's. Re-exported by
messages.py (M.InitProducerIdRequest is used across the tree).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebus.protocol.codec import I8, I16, I32, I64, STR, Array, Message


# --- Idempotent and transactional producers (docs/FORMAT.md 7.12) --------------------------------
@dataclass
class InitProducerIdRequest(Message):
    """A producer id for an idempotent producer (transactional_id ""), or the id and next epoch
    of a transactional id (fencing every older instance, aborting what it left open)."""

    transactional_id: str  # "" = an idempotent producer without transactions
    transaction_timeout_ms: int  # transactional: an open transaction is aborted after this
    producer_id: int = -1  # transactional: the id this instance had, -1 for a new instance
    producer_epoch: int = -1
    FIELDS = (("transactional_id", STR), ("transaction_timeout_ms", I32), ("producer_id", I64),
              ("producer_epoch", I16))


@dataclass
class InitProducerIdResponse(Message):
    producer_id: int
    producer_epoch: int
    FIELDS = (("producer_id", I64), ("producer_epoch", I16))


@dataclass
class TxnPartition(Message):
    topic: str
    partition: int
    FIELDS = (("topic", STR), ("partition", I32))


@dataclass
class AddPartitionsToTxnRequest(Message):
    """The partitions the open transaction will write (it begins with the first); all or none."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    partitions: list[TxnPartition]
    FIELDS = (("transactional_id", STR), ("producer_id", I64), ("producer_epoch", I16),
              ("partitions", Array(TxnPartition)))


@dataclass
class TxnOffset(Message):
    topic: str
    partition: int
    offset: int  # the next offset the group will read
    metadata: str = ""
    FIELDS = (("topic", STR), ("partition", I32), ("offset", I64), ("metadata", STR))


@dataclass
class TxnOffsetCommitRequest(Message):
    """Consumer offsets of `group_id` committed if and when the transaction commits (Kafka's
    AddOffsetsToTxn and TxnOffsetCommit in one request)."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    group_id: str
    offsets: list[TxnOffset]
    FIELDS = (("transactional_id", STR), ("producer_id", I64), ("producer_epoch", I16),
              ("group_id", STR), ("offsets", Array(TxnOffset)))


@dataclass
class EndTxnRequest(Message):
    transactional_id: str
    producer_id: int
    producer_epoch: int
    commit: int  # 1 commit, 0 abort
    FIELDS = (("transactional_id", STR), ("producer_id", I64), ("producer_epoch", I16),
              ("commit", I8))


@dataclass
class TxnPartitionInfo(Message):
    topic: str
    partition: int
    first_offset: int  # the transaction's first batch there; -1: added, nothing written yet
    FIELDS = (("topic", STR), ("partition", I32), ("first_offset", I64))


@dataclass
class TxnInfo(Message):
    """One transactional id as the coordinator holds it."""

    transactional_id: str
    producer_id: int
    producer_epoch: int
    state: str  # empty, ongoing, prepare_commit, prepare_abort
    timeout_ms: int  # transaction.timeout.ms: an ongoing transaction older is aborted
    open_ms: int  # how long the ongoing transaction has been open (since the restart); -1: none
    partitions: list[TxnPartitionInfo]
    groups: list[str]  # consumer groups whose offsets it commits
    FIELDS = (("transactional_id", STR), ("producer_id", I64), ("producer_epoch", I16),
              ("state", STR), ("timeout_ms", I32), ("open_ms", I64),
              ("partitions", Array(TxnPartitionInfo)), ("groups", Array(STR)))


@dataclass
class ProducerInfo(Message):
    """An idempotent (or transactional) producer's sequence state in one partition."""

    topic: str
    partition: int
    producer_id: int
    producer_epoch: int
    last_sequence: int  # of the last record taken
    FIELDS = (("topic", STR), ("partition", I32), ("producer_id", I64), ("producer_epoch", I16),
              ("last_sequence", I32))


@dataclass
class ListTransactionsResponse(Message):
    transactions: list[TxnInfo]
    producers: list[ProducerInfo]  # of the partitions written (or checked) since the start
    FIELDS = (("transactions", Array(TxnInfo)), ("producers", Array(ProducerInfo)))
