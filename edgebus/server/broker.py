"""The supervisor's server, assembled: the loop, its services and the dispatch table.

This module only wires parts together (docs/ARCHITECTURE.md has the picture); each part lives in
its own module and sees the loop through LoopApi (edgebus/server/service.py).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgebus import format as F
from edgebus.acl import Policy
from edgebus.log.manager import LogManager
from edgebus.log.topic_config import TopicConfig
from edgebus.protocol import messages as M
from edgebus.server import status
from edgebus.server.acl import Authorizer
from edgebus.server.cleaning import LogCleaner
from edgebus.server.disk import DiskGuard
from edgebus.server.dispatch import TXN_APIS, Dispatcher, build_table
from edgebus.server.durable import DurableAcks
from edgebus.server.group_service import LazyGroups
from edgebus.server.groups.topic import OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIG
from edgebus.server.handlers.admin import AdminHandlers
from edgebus.server.handlers.data import DataHandlers
from edgebus.server.housekeeping import Housekeeping
from edgebus.server.lazy import OnFirstUse
from edgebus.server.listeners import shm_plane, sock_plane
from edgebus.server.listeners.shm_transport import ShmTransport
from edgebus.server.listeners.socket_claim import SocketClaim
from edgebus.server.listeners.unix import UnixListener
from edgebus.server.loop import Loop
from edgebus.server.notify import Notifier, Watchdog
from edgebus.server.service import Service
from edgebus.server.stats import Stats
from edgebus.server.txn.producers import ProducerStates

if TYPE_CHECKING:  # ssl costs ~5 MB of RSS; only a configured replica listener needs it
    import ssl

    from edgebus.server.groups.handlers import GroupHandlers
    from edgebus.server.handlers.replica import ReplicaHandlers
    from edgebus.server.handlers.txn import TxnHandlers
    from edgebus.server.txn.coordinator import TxnCoordinator

log = logging.getLogger("edgebus.broker")

# The transaction coordinator's state file (server/txn/state.py FILE, and OLD_FILE, the name an
# older edgebus gave it; a test checks they agree): when a previous run left transactions in it,
# the coordinator is made at start, to finish or time out what they hold and to filter native
# fetches; otherwise at the first request that needs it.
TXN_STATE_FILES = ("transactions.json", "kafka-transactions.json")


def txn_state_at_start(data_dir: Path) -> bool:
    """Whether the transaction state a previous run left holds anything (a transactional id,
    an aborted transaction's range): then the coordinator must run from the start."""
    for name in TXN_STATE_FILES:
        try:
            doc = json.loads((Path(data_dir) / name).read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            return True  # the coordinator's own load reports what is wrong with it
        if not isinstance(doc, dict) or doc.get("txns") or doc.get("aborted"):
            return True
    return False

_OWNER_POLICY = Policy()  # no rules, default `owner`: the supervisor's user and root only


class Broker:
    def __init__(
        self,
        logs: LogManager,
        socket_path: Path,
        *,
        socket_mode: int = 0o660,
        topic_defaults: TopicConfig | None = None,
        max_connections: int = 256,
        max_output_buffer: int = 64 * 1024 * 1024,
        max_fetch_wait_ms: int = 30_000,
        flush_interval_ms: int = 1000,
        checkpoint_interval_ms: int = 5000,
        retention_check_interval_ms: int = 60_000,
        notifier: Notifier | None = None,
        disk: DiskGuard | None = None,
        max_input_buffer: int = 2 * F.MAX_FRAME_BYTES,
        node: str = "",
        replica_listen: str | None = None,
        replica_tokens: Mapping[str, str] | None = None,
        replica_tls: ssl.SSLContext | None = None,
        replica_link_idle_ms: int = 30_000,
        socket_claim: SocketClaim | None = None,
        max_connections_per_uid: int = 128,
        max_output_total: int = F.MAX_OUTPUT_TOTAL,
        cleaner_interval_ms: int = 15_000,
        cleaner_io_bytes_per_s: int = 4 * 1024 * 1024,
        acl: Policy | None = _OWNER_POLICY,
        kafka: Any = None,
        kafka_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.logs = logs
        self.socket_path = Path(socket_path)
        self.notifier = notifier
        self.started = time.time()
        self.stats = Stats()  # records/bytes in and out, fsync latency (status and metrics)
        self.loop = loop = Loop(self.stats, max_connections=max_connections,
                                max_output_buffer=max_output_buffer,
                                max_input_buffer=max_input_buffer,
                                max_connections_per_uid=max_connections_per_uid,
                                max_output_total=max_output_total)
        # Free-space watermarks and each topic's on_disk_full policy (edgebus/server/disk.py).
        self.disk = disk if disk is not None else DiskGuard(logs)
        self.listener = UnixListener(loop, self.socket_path, socket_mode, socket_claim)
        self.shm = ShmTransport(loop)  # shared-memory rings (listeners/shm_transport.py)
        self.durable = DurableAcks(loop, self.stats)  # group commit's answers
        self.data = DataHandlers(loop, logs, self.disk, self.durable, self.stats,
                                 max_fetch_wait_ms=max_fetch_wait_ms)
        # Consumer groups, made at their first use (server/group_service.py).
        self.lazy_groups = LazyGroups(loop, self._group_handlers)
        self.admin = AdminHandlers(logs, self.data, self.lazy_groups, self.status,
                                   topic_defaults or TopicConfig())
        self.housekeeping = Housekeeping(
            logs, self.data, self.durable, flush_interval_ms=flush_interval_ms,
            checkpoint_interval_ms=checkpoint_interval_ms,
            retention_check_interval_ms=retention_check_interval_ms)
        # Compacted topics' log cleaner: a thread, paced (server/cleaning.py).
        self.cleaner = LogCleaner(logs, self.durable.committer, cleaner_interval_ms,
                                  cleaner_io_bytes_per_s)
        self.node = node or socket.gethostname()
        # The replica handlers are made at a link's first request (server/lazy.py).
        self.replica_tokens = dict(replica_tokens or {})  # a reload replaces them
        self.replica: OnFirstUse[ReplicaHandlers] = OnFirstUse(
            lambda: self._replica_handlers(self.replica_tokens))
        # Peers' replicators append mirrors here (listeners/tcp.py); none unless configured.
        self.replica_listener = None
        if replica_listen:
            from edgebus.server.listeners.tcp import ReplicaListener  # ssl: loaded only if used
            self.replica_listener = ReplicaListener(loop, replica_listen, replica_tls,
                                                    replica_link_idle_ms / 1000)
        # Access control, checked by the dispatcher for every request (None: acl.enabled false).
        self.acl = Authorizer(acl) if acl is not None else None
        self.admin.acl = self.acl  # links read only what a rule grants (so do the replica handlers)
        # Idempotent producers and transactions, one state for the native and the Kafka front
        # ends (server/txn/; native APIs: handlers/txn.py).
        # The coordinator and the native handlers are made at the first INIT_PRODUCER_ID, other
        # transactional request, batch with a producer id or Kafka connection (server/lazy.py).
        self.producer_states = ProducerStates()
        self._txn: TxnCoordinator | None = None
        self.txn_handlers: OnFirstUse[TxnHandlers] = OnFirstUse(self._make_txn)
        self.data.sequenced = self._first_sequenced
        table = build_table(self.data, self.admin, self.lazy_groups, self.shm, self.replica)
        self.txn_handlers.install(table, {int(k): name for k, name in TXN_APIS.items()})
        self.dispatcher = Dispatcher(loop, table, self.data.produce_fields, self.acl)
        loop.dispatch = self.dispatcher.dispatch_frame
        if shm_plane.available():  # EDGEBUS_SHM_C_PLANE, C module
            plane = self.data.plane = shm_plane.Plane(self.data, self.disk, self.acl)
            if self.shm.reason is None:
                self.shm.plane = plane
            if sock_plane.available():  # EDGEBUS_SOCKET_C_PLANE
                plane.sockets = sock_plane.SocketPlane(plane)
        self.data.standing.check = self.dispatcher.checks.get(int(M.Api.FETCH))
        # Shutdown runs in this order: STOPPING=1, stop accepting, answer parked fetches, finish
        # durable acks; then the loop flushes and closes every connection.
        services: list[Service] = [self.listener, self.shm, self.data, self.lazy_groups,
                                   self.durable, self.disk, self.housekeeping, self.cleaner]
        if self.replica_listener is not None:
            services.insert(1, self.replica_listener)
        # The Kafka wire protocol (edgebus/server/kafka/, listeners/kafka.py): kafka.enabled.
        self.kafka_listeners: list[Any] = []
        self.kafka: Any = None
        if kafka is not None and kafka.enabled:
            from edgebus.server.kafka.front import make_kafka  # kio: at the first connection

            self.kafka, self.kafka_listeners = make_kafka(self, kafka, kafka_tls)
            for i, kl in enumerate(self.kafka_listeners):
                services.insert(1 + i, kl)
        if notifier is not None:  # without one, no watchdog timer keeps the loop awake
            services.insert(0, Watchdog(notifier, self))
        for s in services:
            loop.add(s)
        if OFFSETS_TOPIC not in logs.topics():  # there from the start, as before
            logs.create_topic(OFFSETS_TOPIC, OFFSETS_TOPIC_CONFIG, internal=True)
            log.info("created the internal topic %s", OFFSETS_TOPIC)
        offsets = logs.partition(OFFSETS_TOPIC, 0)
        if offsets.log_end_offset > offsets.log_start_offset:
            self.lazy_groups.get()  # committed offsets to replay (and move back past a cut tail)
        if txn_state_at_start(logs.data_dir):
            self.txn_handlers.get()  # what a previous run left (TXN_STATE_FILE)
        if self.kafka is not None:
            self.kafka.prepare()
        else:
            # The Kafka listener is off this run, but a later run's Kafka clients must still be
            # told of a tail this start's recovery cut: the epochs are bumped all the same.
            from edgebus.server.kafka.leader_epochs import LeaderEpochs

            LeaderEpochs(logs.data_dir).bump_at_start(logs)

    @property
    def groups(self) -> GroupHandlers:
        """The consumer groups, made now if nothing made them yet (server/group_service.py)."""
        return self.lazy_groups.get()

    def _group_handlers(self) -> GroupHandlers:
        from edgebus.server.groups.handlers import GroupHandlers

        return GroupHandlers(self.loop, self.logs, self.data, self.durable)

    def _replica_handlers(self, tokens: Mapping[str, str]) -> ReplicaHandlers:
        from edgebus.server.handlers.replica import ReplicaHandlers

        r = ReplicaHandlers(self.loop, self.logs, self.data, self.disk, self.durable, self.stats,
                            self.node, tokens)
        r.acl = self.acl  # links read only what a rule grants
        return r

    def set_replica_tokens(self, tokens: Mapping[str, str]) -> None:
        """A reload's replica.tokens_file: the next REPLICA_HELLO is checked against these."""
        self.replica_tokens = dict(tokens)
        r = self.replica.made
        if r is not None:
            r.set_tokens(self.replica_tokens)

    @property
    def txn(self) -> TxnCoordinator:
        """The transaction coordinator, made now if nothing needed it yet."""
        self.txn_handlers.get()
        assert self._txn is not None
        return self._txn

    def _make_txn(self) -> TxnHandlers:
        from edgebus.server.handlers.txn import TxnHandlers
        from edgebus.server.txn.coordinator import TxnCoordinator

        self._txn = TxnCoordinator(self, self.producer_states)
        # A deleted topic's producer and transaction state goes with it (nothing to forget
        # before this: whatever creates such state makes the coordinator first).
        self.admin.txn = self._txn
        handlers = TxnHandlers(self._txn, self.producer_states, self.data, self.durable)
        self.data.sequenced = handlers.produce
        self.loop.add(self._txn, before=self.data)  # where it stood in the shutdown order
        return handlers

    def _first_sequenced(self, *args: Any) -> Any:
        """The first batch with a producer id: the handlers are made, and take over."""
        return self.txn_handlers.get().produce(*args)

    def add_service(self, service: Service) -> None:
        """One more part on the loop (the metrics endpoint, a listener)."""
        self.loop.add(service)

    def listen(self) -> None:
        # The TCP listeners (Kafka, replica) first: a port in use fails the start before the Unix
        # socket answers (which is what tells clients and tests the supervisor is ready), and a
        # peer told "ready" never finds the replica port still closed.
        for kl in self.kafka_listeners:
            kl.listen()
        if self.replica_listener is not None:
            self.replica_listener.listen()
        self.listener.listen()
        if self.kafka is not None:
            from edgebus.server.kafka.front import advertise

            advertise(self.kafka, self.kafka_listeners)
        self.loop.install_signals()

    def serve_forever(self) -> None:
        self.loop.run()
        log.info("stopping: closing the socket, answering waiters, flushing the log")
        self.loop.shutdown()
        self.logs.close()
        self.loop.close_signals()
        log.info("stopped cleanly")

    def status(self) -> dict[str, Any]:
        """The status document: edgebus/server/status.py collect, its one source."""
        return status.collect(self)
