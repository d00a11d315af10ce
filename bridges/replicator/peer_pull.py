"""A peer link's down direction: the peer's topics mirrored here, offset for offset.

    links:
      - {name: backup, target: peer, address: 10.0.0.8:9093, ...,
         topics: [{pattern: commands, direction: down}],
         local_replica: {address: 127.0.0.1:9093, token_file: /etc/edgebus/from-gw-8.token}}

The local topic `commands` becomes a mirror whose mirror_of is "<peer node>/<remote topic>":
the same partitions, offsets, append times and batch bytes as the peer's topic (the up
direction turned round). Batches are read from the peer with REPLICA_FETCH over its replica
listener (durable batches only, each with the topic's incarnation; the peer lets this node read
a topic only where an access rule says so, edgebus/server/handlers/link_read.py) and appended
to this node's own supervisor over ITS replica listener, as the peer node: the supervisor's
ordinary rules then hold (a link writes only mirrors of its own node, at exactly the log end,
a batch already there is checked and skipped), and no local client can write the mirror.
Each read of the peer is a long poll (one heartbeat interval at most): an idle link waits at the
peer, and a record produced there comes down as soon as the peer has it durable.

The cursor is the local mirror's log end, read at the start of every session: a crash of the
replicator, of either supervisor or a cut at any point loses nothing and doubles nothing.
Lag is reported as the up direction's (records, bytes from REPLICA_FETCH version 1, seconds:
the age of the oldest record not brought down); with linger_ms the read after the wait starts
where the waking read ended, and both come down in one append (nothing is read twice).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from pathlib import Path

from bridges.replicator.config import LinkConfig, TlsConfig
from bridges.replicator.link import IDLE_WAIT_MS, TOPIC_REFRESH_S
from bridges.replicator.link_status import LinkStatus, PartitionState
from bridges.replicator.pull import PullRunner
from bridges.replicator.sessions import bounded_heartbeat
from edgebus import PartitionRead, ReplicaLink, client_context
from edgebus.errors import EdgebusError, OffsetOutOfRangeError, UnknownTopicError

log = logging.getLogger("edgebus.replicator")

READ_BYTES = 4 * 1024 * 1024  # one REPLICA_FETCH of all partitions: bounded memory
# The longest long poll of the peer: also how long a stop (SIGTERM) may wait for the thread.
MAX_WAIT_MS = 5000


def long_poll_ms(heartbeat_s: float) -> int:
    """How long one read of the peer may park there: one heartbeat interval (an idle link's
    read doubles as its heartbeat), at most MAX_WAIT_MS. With the request's timeout of two
    intervals (so at least the wait plus one), a half-open peer is noticed within two."""
    return min(MAX_WAIT_MS, int(heartbeat_s * 1000))


def _connect(address: str, node: str, token: str, tls: TlsConfig | None,
             timeout: float) -> ReplicaLink:
    ctx = None if tls is None else client_context(
        *(None if p is None else str(p) for p in (tls.ca, tls.cert, tls.key)))
    return ReplicaLink(address, node, token, timeout, tls=ctx,
                       server_name=tls.server_name if tls else None)


class _Links:
    """The session's two connections: to the peer (read) and to this node (append)."""

    def __init__(self, address: str) -> None:
        self.name = address
        self.peer: ReplicaLink | None = None
        self.local: ReplicaLink | None = None

    def close(self) -> None:
        for ln in (self.peer, self.local):
            if ln is not None:
                ln.close()
        self.peer = self.local = None


class PeerPullRunner(PullRunner):
    """PullRunner's loop and status (as "<link>:down"), with batches instead of records."""

    def __init__(self, cfg: LinkConfig, node: str, socket: Path | None,
                 stop: threading.Event) -> None:
        self.cfg = cfg
        self.node = node
        self.label = f"{cfg.name}:down"
        self.socket = socket
        self.stop = stop
        self.links = _Links(cfg.address)
        self.remote = self.links  # type: ignore[assignment]  # PullRunner._end_session closes it
        self.status = LinkStatus()
        self.thread = threading.Thread(target=self.run, name=f"pull-{cfg.name}", daemon=True)
        self._was_up = False

    def _session(self) -> None:
        cfg, st, links = self.cfg, self.status, self.links
        assert cfg.local is not None
        with st.lock:
            st.partitions = {}
            st.read_bytes = 0
        timeout = 2 * cfg.heartbeat_s
        links.peer = peer = _connect(cfg.address, self.node, cfg.token, cfg.tls, timeout)
        # As the peer node: this supervisor lets that link write only mirrors of the peer.
        links.local = local = _connect(cfg.local.address, peer.peer_node, cfg.local.token,
                                       cfg.local.tls, timeout)
        local_of: dict[tuple[str, int], tuple[str, int]] = {}
        incarnation: dict[str, str] = {}  # remote topic -> the incarnation the mirror holds
        cursors: dict[tuple[str, int], int] = {}
        missing = []
        self._gone: set[str] = set()  # remote topics deleted at the peer during this session
        for rule in cfg.pulls:
            rtopic = rule.remote or rule.pattern
            if not self._setup_mirror(peer, local, rule.pattern, rtopic, local_of, incarnation,
                                      cursors):
                missing.append(rtopic)
        log.info("link %s: up, %d partition(s) from node %s at %s", self.label, len(cursors),
                 peer.peer_node, cfg.address)
        st.state, st.last_error = "up", ""
        self._was_up = True
        self._local_io = beat = refresh = time.monotonic()  # _local_io: this node's last answer
        wait_ms = long_poll_ms(cfg.heartbeat_s)
        while not self.stop.is_set():
            if time.monotonic() - beat >= cfg.heartbeat_s:
                # The peer answers every read; this side needs its own sign of life, awaited
                # until two intervals after its last answer (the up direction's bound).
                self._local_io = beat = bounded_heartbeat(local.ping, self._local_io,
                                                          cfg.heartbeat_s)
            if (missing or self._gone) and time.monotonic() - refresh >= TOPIC_REFRESH_S:
                refresh = time.monotonic()
                # A topic waited for is there, or one deleted at the peer was created again: a
                # new session takes it up (and tells a new incarnation from the mirror's).
                if any(peer.describe(t) is not None for t in [*missing, *self._gone]):
                    return
            active = {rtp: c for rtp, c in cursors.items()
                      if not st.partitions[local_of[rtp]].error}
            if not active:
                self.stop.wait(IDLE_WAIT_MS / 1000)  # every partition held: nothing to read
                continue
            # A long poll: the peer answers at once when it has durable data for any partition,
            # else at its first append to one (or the wait's end). Its timeout is the link's
            # (twice the heartbeat, at least the wait plus one heartbeat): a half-open peer is
            # noticed within two heartbeats.
            asked = time.monotonic()
            reads = peer.read_durable(active, READ_BYTES, max_wait_ms=wait_ms,
                                      timeout=2 * cfg.heartbeat_s)
            self._count_read(reads)
            if cfg.linger_ms and any(rd.data for rtp, rd in reads.items() if rtp in active):
                # Batching by time: new data woke the link; what arrives meanwhile is read from
                # where the woken read ended and comes down in the same append with it.
                self.stop.wait(cfg.linger_ms / 1000)
                after = {rtp: (rd.next_offset if rd.data and rd.error is None else active[rtp])
                         for rtp, rd in reads.items() if rtp in active}
                more = peer.read_durable(after, READ_BYTES, timeout=2 * cfg.heartbeat_s)
                self._count_read(more)
                reads = {rtp: _joined(rd, more.get(rtp)) for rtp, rd in reads.items()}
            moved = False
            for rtp, rd in reads.items():
                if rtp in active:
                    moved |= self._apply(local, rtp, local_of[rtp], rd, incarnation, cursors)
            if not moved:
                # A peer that did not park the read (its max_fetch_wait_ms is lower, or it
                # holds too many parked reads already): never spin on it.
                rest = min(wait_ms, IDLE_WAIT_MS) / 1000 - (time.monotonic() - asked)
                if rest > 0:
                    self.stop.wait(rest)

    def _count_read(self, reads: dict[tuple[str, int], PartitionRead]) -> None:
        with self.status.lock:
            self.status.read_bytes += sum(len(rd.data) for rd in reads.values())

    def _setup_mirror(self, peer: ReplicaLink, local: ReplicaLink, ltopic: str, rtopic: str,
                      local_of: dict[tuple[str, int], tuple[str, int]],
                      incarnation: dict[str, str], cursors: dict[tuple[str, int], int]) -> bool:
        """The local mirror (created like the peer's topic if there is none) and each
        partition's cursor (its log end); False when the peer has no such topic yet."""
        st = self.status
        src = peer.describe(rtopic)
        if src is None:
            with st.lock:
                st.partitions[(ltopic, 0)] = PartitionState(
                    -1, error=f"node {peer.peer_node} has no topic {rtopic!r} (yet)")
            return False
        want = f"{peer.peer_node}/{rtopic}"
        info = local.describe(ltopic)
        if info is None:
            local.create_mirror(ltopic, src, want)
            info = local.describe(ltopic)
            assert info is not None
        why = ""
        if info.mirror_of != want:
            why = (f"the local topic {ltopic!r} is "
                   + (f"a mirror of {info.mirror_of}" if info.mirror_of else "an ordinary topic")
                   + f", not a mirror of {want}: bring the topic down into a topic of its own")
        elif info.incarnation != src.incarnation:
            why = (f"{rtopic!r} at node {peer.peer_node} is incarnation {src.incarnation}, the "
                   f"local mirror holds {info.incarnation}: the topic was deleted and created "
                   f"again there; delete the local topic {ltopic!r} to start a new mirror")
        elif info.partitions < src.partitions:
            why = (f"the local mirror {ltopic!r} has {info.partitions} partition(s), "
                   f"{rtopic!r} at node {peer.peer_node} {src.partitions}")
        incarnation[rtopic] = info.incarnation
        for p in range(src.partitions):
            rtp = (rtopic, p)
            local_of[rtp] = (ltopic, p)
            end = info.end_offsets[p] if p < info.partitions else -1
            with st.lock:
                st.partitions[(ltopic, p)] = PartitionState(end, source_end=src.end_offsets[p])
            if why:
                self._hold((ltopic, p), why)
            elif end == 0 and src.start_offsets[p] > 0:
                self._hold((ltopic, p), f"{rtopic}-{p} at node {peer.peer_node} starts at offset "
                           f"{src.start_offsets[p]} (its retention deleted the rest): an "
                           "offset-preserving mirror cannot start there")
            else:
                cursors[rtp] = end
        return True

    def _apply(self, local: ReplicaLink, rtp: tuple[str, int], ltp: tuple[str, int],
               rd: PartitionRead, incarnation: dict[str, str],
               cursors: dict[tuple[str, int], int]) -> bool:
        """Append one partition's read to the local mirror; True if its cursor moved."""
        ps = self.status.partitions[ltp]
        if isinstance(rd.error, OffsetOutOfRangeError):
            self._hold(ltp, f"gap at remote offset {cursors[rtp]}: {rd.error} (the peer's "
                       "retention deleted it before it came down)")
            return False
        if isinstance(rd.error, UnknownTopicError):
            self._hold(ltp, f"{rtp[0]} is gone at the peer: {rd.error}")
            self._gone.add(rtp[0])
            return False
        if rd.error is not None:
            raise rd.error
        if rd.incarnation != incarnation[rtp[0]]:
            self._hold(ltp, f"{rtp[0]!r} at the peer is now incarnation {rd.incarnation}, the "
                       f"local mirror holds {incarnation[rtp[0]]}: deleted and created again "
                       f"there; delete the local topic {ltp[0]!r} to start a new mirror")
            return False
        ps.source_end = max(rd.durable_end, cursors[rtp])
        if rd.bytes_to_end >= 0:
            ps.lag_bytes = rd.bytes_to_end
        if not rd.data:
            if cursors[rtp] >= ps.source_end:
                ps.caught_up_at, ps.head_append_ms = time.time(), -1
            return False
        first_ms, last_ms = rd.append_times_ms()
        ps.head_append_ms = first_ms  # the oldest record not brought down, until it is
        try:
            _, present, end = local.append(ltp[0], ltp[1], rd.incarnation, rd.data, durable=True)
            self._local_io = time.monotonic()
        except EdgebusError as e:
            if not e.retriable:
                self._hold(ltp, f"the local supervisor refused the peer's batches: {e}")
                return False
            raise
        ps.landed(cursors[rtp], end, len(rd.data), present)
        cursors[rtp] = end
        ps.landed_from_read(end, rd.next_offset, last_ms)
        return True


def _joined(first: PartitionRead, more: PartitionRead | None) -> PartitionRead:
    """A woken read and the read made after linger_ms from where it ended, as one read (one
    append here). The woken read alone when the later one does not continue it (an error, or
    another incarnation: the next read meets that and handles it)."""
    if more is None or first.error is not None or not first.data:
        return first if more is None else more
    left = more.bytes_to_end + len(first.data) if more.bytes_to_end >= 0 else -1
    if more.error is not None or more.incarnation != first.incarnation or not more.data:
        return first if more.error is not None or more.incarnation != first.incarnation \
            else dataclasses.replace(first, bytes_to_end=left)
    return dataclasses.replace(more, data=bytes(first.data) + bytes(more.data),
                               first_offset=first.first_offset, bytes_to_end=left)
