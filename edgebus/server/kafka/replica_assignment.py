"""Manual replica assignments in CreateTopics and CreatePartitions (`kafka-topics --create
--replica-assignment 0,0`, kafka-python's `replica_assignments`, kafkajs' `replicaAssignment`).

On one broker the only assignment a partition can have is `[0]`, as Kafka would check it
against its live brokers: such an assignment is taken (the partitions are created, one per
entry), anything else is INVALID_REPLICA_ASSIGNMENT naming what is wrong, with Kafka's rules
(consecutive partitions from 0, no duplicate replicas, known brokers, one replication factor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgebus.server.kafka.context import NODE_ID

INVALID_REPLICA_ASSIGNMENT = 39


class AssignmentError(Exception):
    """An assignment a broker refuses; str() is the message for the client."""


def _check_replicas(where: str, brokers: Sequence[int]) -> None:
    if len(set(brokers)) != len(brokers):
        raise AssignmentError(f"{where}: duplicate replicas {list(brokers)}")
    unknown = sorted(set(brokers) - {NODE_ID})
    if unknown:
        raise AssignmentError(f"{where}: unknown broker(s) {unknown}; this cluster is one "
                              f"broker, node {NODE_ID}")
    if not brokers:
        raise AssignmentError(f"{where}: no replicas")


def created_partitions(assignments: Sequence[Any]) -> int:
    """The partition count of a CreateTopics assignment (CreatableReplicaAssignment rows)."""
    indexes = sorted(a.partition_index for a in assignments)
    if indexes != list(range(len(indexes))):
        raise AssignmentError(f"partitions {indexes} are not a consecutive 0-based sequence")
    for a in assignments:
        _check_replicas(f"partition {a.partition_index}", a.broker_ids)
    return len(indexes)


def check_added(assignments: Sequence[Any], current: int, count: int) -> None:
    """A CreatePartitions assignment: one [0] per partition added."""
    if len(assignments) != count - current:
        raise AssignmentError(f"{len(assignments)} assignment(s) for {count - current} new "
                              f"partition(s) ({current} -> {count})")
    for i, a in enumerate(assignments):
        _check_replicas(f"partition {current + i}", a.broker_ids)
