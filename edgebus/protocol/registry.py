"""Every API the supervisor serves, declared once as data: its key, request and response bodies
and the versions accepted (docs/FORMAT.md 7.4). messages.py and groups.py only define bodies;
nothing is registered as a side effect of an import.
"""

from __future__ import annotations

from typing import NamedTuple

from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.protocol.codec import Message


class ApiSpec(NamedTuple):
    request: type[Message]
    response: type[Message]
    min_version: int = 0
    max_version: int = 0
    # Bodies of versions 1 and up, in order: (request, response) of version 1, 2, ...
    # (version 0's are request and response). A client asks a version by sending its body.
    later: tuple[tuple[type[Message], type[Message]], ...] = ()


APIS: dict[int, ApiSpec] = {
    M.Api.API_VERSIONS: ApiSpec(M.ApiVersionsRequest, M.ApiVersionsResponse),
    M.Api.METADATA: ApiSpec(M.MetadataRequest, M.MetadataResponse),
    M.Api.CREATE_TOPIC: ApiSpec(M.CreateTopicRequest, M.Empty),
    M.Api.DELETE_TOPIC: ApiSpec(M.DeleteTopicRequest, M.Empty),
    M.Api.PRODUCE: ApiSpec(M.ProduceRequest, M.ProduceResponse),
    M.Api.FETCH: ApiSpec(M.FetchRequest, M.FetchResponse),
    M.Api.LIST_OFFSETS: ApiSpec(M.ListOffsetsRequest, M.ListOffsetsResponse),
    M.Api.STATUS: ApiSpec(M.Empty, M.StatusResponse),
    M.Api.ALTER_TOPIC_CONFIG: ApiSpec(M.AlterTopicConfigRequest, M.AlterTopicConfigResponse),
    M.Api.JOIN_GROUP: ApiSpec(G.JoinGroupRequest, G.JoinGroupResponse),
    M.Api.SYNC_GROUP: ApiSpec(G.SyncGroupRequest, G.SyncGroupResponse),
    M.Api.HEARTBEAT: ApiSpec(G.HeartbeatRequest, M.Empty),
    M.Api.LEAVE_GROUP: ApiSpec(G.LeaveGroupRequest, M.Empty),
    M.Api.OFFSET_COMMIT: ApiSpec(G.OffsetCommitRequest, G.OffsetCommitResponse),
    M.Api.OFFSET_FETCH: ApiSpec(G.OffsetFetchRequest, G.OffsetFetchResponse),
    M.Api.LIST_GROUPS: ApiSpec(M.Empty, G.ListGroupsResponse),
    M.Api.DESCRIBE_GROUP: ApiSpec(G.DescribeGroupRequest, G.DescribeGroupResponse),
    M.Api.RESET_OFFSETS: ApiSpec(G.ResetOffsetsRequest, G.ResetOffsetsResponse),
    M.Api.SHM_ATTACH: ApiSpec(M.ShmAttachRequest, M.ShmAttachResponse),
    M.Api.FETCH_STANDING: ApiSpec(M.FetchRequest, M.FetchResponse),
    M.Api.REPLICA_HELLO: ApiSpec(M.ReplicaHelloRequest, M.ReplicaHelloResponse),
    M.Api.REPLICA_APPEND: ApiSpec(M.ReplicaAppendRequest, M.ReplicaAppendResponse),
    M.Api.PROMOTE_TOPIC: ApiSpec(M.PromoteTopicRequest, M.Empty),
    M.Api.REPLICA_FETCH: ApiSpec(M.ReplicaFetchRequest, M.ReplicaFetchResponse, 0, 1,
                                 ((M.ReplicaFetchRequestV1, M.ReplicaFetchResponseV1),)),
    M.Api.REPLICA_GAP: ApiSpec(M.ReplicaGapRequest, M.ReplicaAppendResponse),
    M.Api.REPLICA_APPEND_COMPRESSED: ApiSpec(M.ReplicaAppendCompressedRequest,
                                             M.ReplicaAppendResponse),
    M.Api.INIT_PRODUCER_ID: ApiSpec(M.InitProducerIdRequest, M.InitProducerIdResponse),
    M.Api.ADD_PARTITIONS_TO_TXN: ApiSpec(M.AddPartitionsToTxnRequest, M.Empty),
    M.Api.TXN_OFFSET_COMMIT: ApiSpec(M.TxnOffsetCommitRequest, M.Empty),
    M.Api.END_TXN: ApiSpec(M.EndTxnRequest, M.Empty),
    M.Api.LIST_TRANSACTIONS: ApiSpec(M.Empty, M.ListTransactionsResponse),
}

# The views the codec and the ApiVersions handler read (derived from APIS, never edited).
REQUESTS: dict[int, type[Message]] = {k: s.request for k, s in APIS.items()}
RESPONSES: dict[int, type[Message]] = {k: s.response for k, s in APIS.items()}
VERSIONS: dict[int, tuple[int, int]] = {int(k): (s.min_version, s.max_version) for k, s in APIS.items()}
# (api, version) -> its request and response bodies, and a request body's type -> its version.
BODIES: dict[tuple[int, int], tuple[type[Message], type[Message]]] = {
    (int(k), v): b for k, s in APIS.items()
    for v, b in enumerate(((s.request, s.response), *s.later))}
REQUEST_VERSION: dict[type[Message], int] = {b[0]: v for (_, v), b in BODIES.items() if v}


def version_of(body: object) -> int:
    """The version a request body asks for (0 unless it is a later version's body)."""
    return REQUEST_VERSION.get(type(body), 0)  # type: ignore[arg-type]
