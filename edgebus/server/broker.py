"""The supervisor's server, assembled: the loop, its services and the dispatch table.

This module only wires parts together (docs/ARCHITECTURE.md has the picture); each part lives in
its own module and sees the loop through LoopApi (edgebus/server/service.py).
"""

from __future__ import annotations

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
from edgebus.server.dispatch import Dispatcher, build_table
from edgebus.server.durable import DurableAcks
from edgebus.server.groups import GroupHandlers
from edgebus.server.handlers.admin import AdminHandlers
from edgebus.server.handlers.data import DataHandlers
from edgebus.server.handlers.replica import ReplicaHandlers
from edgebus.server.handlers.txn import TxnHandlers
from edgebus.server.housekeeping import Housekeeping
from edgebus.server.listeners.shm import ShmTransport
from edgebus.server.listeners.socket_claim import SocketClaim
from edgebus.server.listeners.unix import UnixListener
from edgebus.server.loop import Loop
from edgebus.server.notify import Notifier, Watchdog
from edgebus.server.service import Service
from edgebus.server.stats import Stats
from edgebus.server.txn.coordinator import TxnCoordinator
from edgebus.server.txn.producers import ProducerStates

if TYPE_CHECKING:  # ssl costs ~5 MB of RSS; only a configured replica listener needs it
    import ssl

log = logging.getLogger("edgebus.broker")

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
        self.shm = ShmTransport(loop)  # shared-memory rings (listeners/shm.py)
        self.durable = DurableAcks(loop, self.stats)  # group commit's answers
        self.data = DataHandlers(loop, logs, self.disk, self.durable, self.stats,
                                 max_fetch_wait_ms=max_fetch_wait_ms)
        self.groups = GroupHandlers(loop, logs, self.data, self.durable)  # consumer groups
        self.admin = AdminHandlers(logs, self.data, self.groups, self.status,
                                   topic_defaults or TopicConfig())
        self.housekeeping = Housekeeping(
            logs, self.data, self.durable, flush_interval_ms=flush_interval_ms,
            checkpoint_interval_ms=checkpoint_interval_ms,
            retention_check_interval_ms=retention_check_interval_ms)
        # Compacted topics' log cleaner: a thread, paced (server/cleaning.py).
        self.cleaner = LogCleaner(logs, self.durable.committer, cleaner_interval_ms,
                                  cleaner_io_bytes_per_s)
        self.node = node or socket.gethostname()
        self.replica = ReplicaHandlers(loop, logs, self.data, self.disk, self.durable, self.stats,
                                       self.node, replica_tokens or {})
        # Peers' replicators append mirrors here (listeners/tcp.py); none unless configured.
        self.replica_listener = None
        if replica_listen:
            from edgebus.server.listeners.tcp import ReplicaListener  # ssl: loaded only if used
            self.replica_listener = ReplicaListener(loop, replica_listen, replica_tls,
                                                    replica_link_idle_ms / 1000)
        # Access control, checked by the dispatcher for every request (None: acl.enabled false).
        self.acl = Authorizer(acl) if acl is not None else None
        self.replica.acl = self.admin.acl = self.acl  # links read only what a rule grants
        # Idempotent producers and transactions, one state for the native and the Kafka front
        # ends (server/txn/; native APIs: handlers/txn.py).
        self.producer_states = ProducerStates()
        self.txn = TxnCoordinator(self, self.producer_states)
        self.admin.txn = self.txn  # a deleted topic's producer and transaction state goes
        self.txn_handlers = TxnHandlers(self.txn, self.producer_states, self.data, self.durable)
        self.data.sequenced = self.txn_handlers.produce
        table = build_table(self.data, self.admin, self.groups, self.shm, self.replica)
        table.update(self.txn_handlers.table())
        self.dispatcher = Dispatcher(loop, table, self.data.produce_fields, self.acl)
        loop.dispatch = self.dispatcher.dispatch_frame
        self.data.standing.check = self.dispatcher.checks.get(int(M.Api.FETCH))
        # Shutdown runs in this order: STOPPING=1, stop accepting, answer parked fetches, finish
        # durable acks; then the loop flushes and closes every connection.
        services: list[Service] = [self.listener, self.shm, self.txn, self.data, self.groups,
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
        if self.kafka is not None:
            self.kafka.prepare()

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
