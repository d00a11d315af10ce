"""edgebus.Admin: topics, offsets, consumer groups and status."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from edgebus.client.offsets import list_offsets
from edgebus.client.shm_channel import open_sync_channel
from edgebus.client.types import TopicPartition
from edgebus.errors import TopicExistsError, error_for_code
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M


class Admin:
    def __init__(self, socket: str | os.PathLike[str] | None = None, timeout: float = 30.0,
                 transport: str = "auto") -> None:
        # transport: "auto" (shared-memory rings when available), "shm" or "socket".
        self._ch = open_sync_channel(socket, timeout, transport)
        self._ch.request(M.Api.API_VERSIONS, M.ApiVersionsRequest())

    @property
    def socket_path(self) -> str:
        return str(self._ch.path)

    def create_topic(self, name: str, partitions: int | None = None,
                     config: Mapping[str, Any] | None = None, exist_ok: bool = False) -> bool:
        """Create a topic; settings not given come from the supervisor's topic_defaults.
        Returns True if it was created. With exist_ok, a topic that exists already is no error
        (False is returned) and is left as it is: its partitions and settings are not compared
        with those asked for (alter_topic_config changes settings)."""
        if partitions is not None and partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        entries = [M.ConfigEntry(k, str(v)) for k, v in (config or {}).items()]
        try:
            self._ch.request(M.Api.CREATE_TOPIC,
                             M.CreateTopicRequest(name, partitions or 0, entries))
        except TopicExistsError:
            if not exist_ok:
                raise
            return False
        return True

    def alter_topic_config(self, name: str, config: Mapping[str, Any]) -> dict[str, str]:
        """Change settings of an existing topic (e.g. {"retention_ms": 86_400_000}); the others
        keep their values. The change is durable (it survives a restart) when this returns, and
        applies from the next append, segment roll or retention check. Returns every setting of
        the topic after the change. The partition count cannot be changed."""
        entries = [M.ConfigEntry(k, str(v)) for k, v in config.items()]
        resp = self._ch.request(M.Api.ALTER_TOPIC_CONFIG, M.AlterTopicConfigRequest(name, entries))
        return {e.name: e.value for e in resp.configs}

    def promote_topic(self, name: str) -> None:
        """Make a mirror topic writable (after a failover: its source node is gone for good).
        Stop the replicator that feeds it first: appends of that link are refused from now on."""
        self._ch.request(M.Api.PROMOTE_TOPIC, M.PromoteTopicRequest(name))

    def delete_topic(self, name: str) -> None:
        self._ch.request(M.Api.DELETE_TOPIC, M.DeleteTopicRequest(name))

    def list_topics(self) -> list[str]:
        resp = self._ch.request(M.Api.METADATA, M.MetadataRequest([]))
        return [t.name for t in resp.topics]

    def describe_topic(self, name: str) -> M.TopicMetadata:
        t = self._ch.request(M.Api.METADATA, M.MetadataRequest([name])).topics[0]
        if t.error_code:
            raise error_for_code(t.error_code, t.error_message)
        return t

    def list_offsets(self, partitions: list[TopicPartition], timestamp: int) -> dict[TopicPartition, tuple[int, int]]:
        """(offset, timestamp) per partition for LATEST (-1), EARLIEST (-2) or a time in ms.
        offset is -1 when no record was appended at or after the time."""
        return list_offsets(self._ch, [(tp.topic, tp.partition, timestamp) for tp in partitions])

    # --- consumer groups (bodies in edgebus/protocol/groups.py) ---------------------------------
    def list_groups(self) -> list[G.GroupListing]:
        """Every group with members or committed offsets: id, state, assignor, member count."""
        return self._ch.request(M.Api.LIST_GROUPS, M.Empty()).groups

    def describe_group(self, group_id: str) -> G.DescribeGroupResponse:
        """State, generation, members with their assignment, and per partition the committed
        offset, log end offset and lag (UnknownGroupError for a group nobody knows)."""
        return self._ch.request(M.Api.DESCRIBE_GROUP, G.DescribeGroupRequest(group_id))

    def list_group_offsets(self, group_id: str) -> dict[TopicPartition, G.CommittedOffset]:
        resp = self._ch.request(M.Api.OFFSET_FETCH, G.OffsetFetchRequest(group_id, []))
        return {TopicPartition(o.topic, o.partition): o for o in resp.offsets}

    def reset_offsets(self, group_id: str, topic: str, *, earliest: bool = False,
                      latest: bool = False, offset: int | None = None,
                      timestamp_ms: int | None = None, partitions: list[int] | None = None,
                      dry_run: bool = False) -> list[G.OffsetReset]:
        """Set the group's committed offsets of `topic` (all partitions, or `partitions`) to the
        earliest or latest offset, to `offset` (clamped to the log), or to the first offset
        appended at or after `timestamp_ms`. Exactly one target; the group must have no active
        members (GroupNotEmptyError). Returns the previous and new offset per partition."""
        chosen = [(earliest, G.RESET_EARLIEST, 0), (latest, G.RESET_LATEST, 0),
                  (offset is not None, G.RESET_OFFSET, offset or 0),
                  (timestamp_ms is not None, G.RESET_TIMESTAMP, timestamp_ms or 0)]
        targets = [(to, value) for given, to, value in chosen if given]
        if len(targets) != 1:
            raise ValueError("give exactly one of earliest, latest, offset, timestamp_ms")
        to, value = targets[0]
        req = G.ResetOffsetsRequest(group_id, topic, sorted(partitions or []), to, value,
                                    1 if dry_run else 0)
        return self._ch.request(M.Api.RESET_OFFSETS, req).offsets

    def status(self) -> dict[str, Any]:
        return json.loads(bytes(self._ch.request(M.Api.STATUS, M.Empty()).json))

    def list_transactions(self) -> M.ListTransactionsResponse:
        """The transactional ids the supervisor holds (producer id, epoch, state, the open
        transaction's partitions and age, its timeout) and the idempotent producers' sequence
        state per partition (those written since the supervisor started)."""
        return self._ch.request(M.Api.LIST_TRANSACTIONS, M.Empty())

    def request(self, api: int, body: M.Message, timeout: float | None = None) -> Any:
        """Send any request on this connection (used by group and CLI code)."""
        return self._ch.request(api, body, timeout)

    def close(self) -> None:
        self._ch.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
