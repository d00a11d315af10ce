"""edgebus.Admin: topics, offsets and status."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from edgebus.client.channel import SyncChannel
from edgebus.client.types import TopicPartition
from edgebus.errors import error_for_code
from edgebus.protocol import messages as M


class Admin:
    def __init__(self, socket: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> None:
        self._ch = SyncChannel(socket, timeout)
        self._ch.request(M.Api.API_VERSIONS, M.ApiVersionsRequest())

    @property
    def socket_path(self) -> str:
        return str(self._ch.path)

    def create_topic(self, name: str, partitions: int = 1,
                     config: Mapping[str, Any] | None = None) -> None:
        entries = [M.ConfigEntry(k, str(v)) for k, v in (config or {}).items()]
        self._ch.request(M.Api.CREATE_TOPIC, M.CreateTopicRequest(name, partitions, entries))

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
        req = M.ListOffsetsRequest([M.ListOffsetsPartition(tp.topic, tp.partition, timestamp)
                                    for tp in partitions])
        out = {}
        for r in self._ch.request(M.Api.LIST_OFFSETS, req).partitions:
            if r.error_code:
                raise error_for_code(r.error_code, r.error_message)
            out[TopicPartition(r.topic, r.partition)] = (r.offset, r.timestamp)
        return out

    def status(self) -> dict[str, Any]:
        return json.loads(self._ch.request(M.Api.STATUS, M.Empty()).json)

    def request(self, api: int, body: M.Message, timeout: float | None = None) -> Any:
        """Send any request on this connection (used by group and CLI code)."""
        return self._ch.request(api, body, timeout)

    def close(self) -> None:
        self._ch.close()

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
