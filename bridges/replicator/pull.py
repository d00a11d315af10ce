"""A link's down direction: topics of the target brought into local topics (direction: down).

    topics:
      - {pattern: commands, direction: down, remote: office.commands.gw-7}

Remote partition p goes to local partition p, record by record (key, value, headers, timestamp),
plus one header naming where it comes from (REMOTE_HEADER, docs/FORMAT.md 7.10):

    edgebus-remote: <link>/<remote topic>/<partition>/<offset>

The cursor is the local topic itself: at the start of every session the last local record's
header names the remote offset it holds, and reading resumes after it. Each write to the local
log is one chunk per partition, acknowledged durable before the next is sent: a crash of the
replicator or of the supervisor at any point leaves the local partition ending at a whole
acknowledged-or-not batch, and the header of its last record says exactly where to go on.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from bridges.replicator.config import LinkConfig
from bridges.replicator.link import IDLE_WAIT_MS, TOPIC_REFRESH_S
from bridges.replicator.link_status import LinkStatus, PartitionState
from bridges.replicator.nats_wildcards import is_wildcard
from bridges.replicator.pull_wildcards import WildcardRule, Wildcards
from bridges.replicator.pull_writes import CHUNK_BYTES, REMOTE_HEADER, LocalWrites
from bridges.replicator.refused import Refused
from bridges.replicator.sessions import SessionLoop, bounded_heartbeat, half_open
from bridges.replicator.targets.base import Remote, TargetRefusedError
from edgebus import Admin, BatchReader, Producer
from edgebus.errors import (
    EdgebusError,
    NotAMirrorError,
    OperationTimeoutError,
    UnknownTopicError,
)

log = logging.getLogger("edgebus.replicator")

def make_remote(cfg: LinkConfig, node: str) -> Remote:
    if cfg.target == "kafka" and cfg.kafka is not None:
        from bridges.replicator.targets.kafka_pull import KafkaRemote

        return KafkaRemote(cfg.name, cfg.kafka, node, timeout=2 * cfg.heartbeat_s)
    if cfg.target == "nats" and cfg.nats is not None:
        from bridges.replicator.targets.nats_pull import NatsRemote

        return NatsRemote(cfg, node, timeout=2 * cfg.heartbeat_s)
    raise ValueError(f"topics cannot be brought down from a {cfg.target} target yet")


class PullRunner(LocalWrites, SessionLoop):
    """The down direction of one link: a thread, its own connection to the target."""

    def __init__(self, cfg: LinkConfig, node: str, socket: Path | None,
                 stop: threading.Event, remote: Remote | None = None) -> None:
        self.cfg = cfg
        self.label = f"{cfg.name}:down"  # its name in status and metrics
        self.socket = socket
        self.stop = stop
        self.remote = remote if remote is not None else make_remote(cfg, node)
        self.status = LinkStatus()
        self.thread = threading.Thread(target=self.run, name=f"pull-{cfg.name}", daemon=True)
        self._was_up = False
        # The last gap marker counted per remote partition (markers come in order: one at
        # or below it was counted): one entry per subject, not one per marker ever seen.
        self._markers: dict[tuple[str, int], int] = {}
        # NATS rules whose remote has wildcards: their subjects, kept across sessions.
        self._wild = Wildcards(self.label, [r for r in cfg.pulls if cfg.target == "nats"
                                            and not r.subjects and is_wildcard(r.remote or r.pattern)])
        self.status.refusals = self._wild.refusals
        self.status.wildcards = self._wild
        # Subjects the target refuses to let this link read (a NATS permission), by remote
        # partition, asked again on a backoff; kept across sessions (refused.py).
        self._refused = Refused()

    def _end_session(self) -> None:
        self.remote.close()

    def _session(self) -> None:
        st, remote = self.status, self.remote
        with st.lock:
            st.partitions = {}
        remote.connect_pull()
        local_of: dict[tuple[str, int], tuple[str, int]] = {}  # remote tp -> local tp
        cursors: dict[tuple[str, int], int] = {}  # remote tp -> next remote offset wanted
        with Admin(self.socket, transport="socket") as admin, BatchReader(self.socket) as reader, \
                Producer(socket=self.socket, acks="durable", linger_ms=1, max_in_flight=1,
                         batch_size=CHUNK_BYTES * 2, max_request_size=CHUNK_BYTES * 4,
                         transport="socket") as producer:
            wild = {id(w.rule) for w in self._wild.rules}
            for w in self._wild.rules:
                self._setup_wildcard(admin, reader, w, local_of, cursors)
            for rule in self.cfg.pulls:
                if id(rule) in wild:
                    continue  # above
                if rule.subjects:  # NATS: subject i into partition i
                    self._setup_subjects(admin, reader, rule.pattern, rule.subjects, local_of,
                                         cursors)
                else:
                    self._setup(admin, reader, rule.pattern, rule.remote or rule.pattern,
                                local_of, cursors)
            refused = remote.assign({tp: c for tp, c in cursors.items()
                                     if not st.partitions[local_of[tp]].error})
            for rtp, no in refused.items():
                self._refuse(rtp, local_of[rtp], no)
            for rtp in cursors.keys() - refused.keys():
                self._taken(rtp, local_of[rtp])
            log.info("link %s: up, %d partition(s) from %s", self.label, len(cursors), remote.name)
            st.state, st.last_error = "up", ""
            self._was_up = True
            # answered: the target's last answer
            answered = beat = refresh = wild_refresh = time.monotonic()
            hb = self.cfg.heartbeat_s
            # A pull waits at most half a heartbeat for data (and the remote gives its answer
            # a heartbeat more), so that with the heartbeat's own bound a half-open link is
            # given up within two intervals of the last answer, as the up direction's.
            wait_s = min(IDLE_WAIT_MS / 1000, hb / 2)
            missing = [name for r in self.cfg.pulls if id(r) not in wild
                       for name in (r.subjects or (r.remote or r.pattern,))
                       if (name, 0) not in local_of]
            while not self.stop.is_set():
                if missing and time.monotonic() - refresh >= TOPIC_REFRESH_S:
                    refresh = time.monotonic()
                    if any(remote.remote_partitions(t) is not None for t in missing):
                        return  # a topic waited for is there: a new session takes it up
                if self._wild and time.monotonic() - wild_refresh >= TOPIC_REFRESH_S:
                    wild_refresh = time.monotonic()
                    nats: Any = remote  # NatsRemote: only a NATS link has wildcard rules
                    if any(w.classify(nats.subjects(w.filter, self._wild.scan_limit(w)), set())
                           for w in self._wild.rules):
                        return  # a new subject taken: a new session sets it up
                self._ask_refused_again(local_of, cursors)
                try:
                    got = remote.pull(wait_s)
                except OperationTimeoutError as e:
                    raise half_open(hb, answered, "a pull unanswered", e) from None
                if got.answered:
                    answered = time.monotonic()
                for rtp, no in got.refused.items():
                    self._refuse(rtp, local_of[rtp], no)
                for rtp, end in got.at_end.items():
                    if rtp in local_of:
                        ps = st.partitions[local_of[rtp]]
                        ps.source_end = max(end, cursors[rtp])
                        ps.caught_up_at, ps.head_append_ms = time.time(), -1
                        ps.lag_bytes = 0  # at the target's end: nothing behind
                for rtp, why in got.gaps.items():
                    if rtp in local_of:
                        self._hold(local_of[rtp], f"gap at remote offset {cursors[rtp]}: {why}")
                for rtp, recs in got.records.items():
                    if rtp in local_of and not st.partitions[local_of[rtp]].error:
                        self._write(producer, rtp, local_of[rtp], recs, cursors,
                                    got.behind.get(rtp))
                if time.monotonic() - beat >= hb:
                    # Raises on a half-open link: no answer within two intervals of the last.
                    # Every interval even while pulls are answered: NATS's also checks that
                    # the session's consumers are still there.
                    answered = beat = bounded_heartbeat(remote.heartbeat, answered, hb)

    def _setup(self, admin: Admin, reader: BatchReader, local: str, rtopic: str,
               local_of: dict[tuple[str, int], tuple[str, int]],
               cursors: dict[tuple[str, int], int]) -> None:
        """The local topic (made with the remote's partition count if there is none), and each
        partition's cursor from its last record."""
        st = self.status
        n = self.remote.remote_partitions(rtopic)
        if n is None:
            with st.lock:
                st.partitions[(local, 0)] = PartitionState(
                    -1, error=f"{self.remote.name} has no topic {rtopic!r} (yet)")
            return
        try:
            info = reader.describe(local)
        except UnknownTopicError:
            admin.create_topic(local, n)
            info = reader.describe(local)
        for p in range(n):
            rtp = (rtopic, p)
            local_of[rtp] = (local, p)
            with st.lock:
                ps = st.partitions[(local, p)] = PartitionState(-1)
            if p >= info.partitions:
                self._hold((local, p), f"the local topic {local!r} has {info.partitions} "
                           f"partition(s), {rtopic!r} at the target {n}: add partitions here")
                continue
            try:
                c = self._local_cursor(reader, local, p, rtopic, info.start_offsets[p],
                                       info.end_offsets[p])
            except NotAMirrorError as e:
                self._hold((local, p), str(e))
                continue
            cursors[rtp] = ps.cursor = c

    def _setup_wildcard(self, admin: Admin, reader: BatchReader, w: WildcardRule,
                        local_of: dict[tuple[str, int], tuple[str, int]],
                        cursors: dict[tuple[str, int], int]) -> None:
        """A wildcard rule's subjects (those taken before, and new ones the stream holds now,
        within max_subjects), each into its own topic as a one-subject list is."""
        remote: Any = self.remote  # NatsRemote: only a NATS link has wildcard rules
        w.classify(remote.subjects(w.filter, self._wild.scan_limit(w)), set(admin.list_topics()))
        for subject, topic in sorted(w.taken.items()):
            try:
                self._setup_subjects(admin, reader, topic, (subject,), local_of, cursors)
            except EdgebusError as e:
                if e.retriable:
                    raise
                # The supervisor refused the topic (access rules, limits, its name): this
                # subject only, never the others; asked again on a backoff (an operator may
                # change the rule or delete topics meanwhile).
                w.refuse(subject, e, retry=True)
                continue
            if w.retry.clear(subject):
                w.refusals.drop(subject)
                log.info("link %s: wildcard rule %r: subject %s taken after all", self.label,
                         w.filter, subject)

    def _setup_subjects(self, admin: Admin, reader: BatchReader, local: str,
                        subjects: tuple[str, ...], local_of: dict[tuple[str, int], tuple[str, int]],
                        cursors: dict[tuple[str, int], int]) -> None:
        """Several NATS subjects into one local topic (made with one partition per subject if
        there is none): subject i into partition i, each with its own cursor, the last record's
        header of its partition (`<link>/<subject>/0/<sequence>`)."""
        st = self.status
        try:
            info = reader.describe(local)
        except UnknownTopicError:
            admin.create_topic(local, len(subjects))
            info = reader.describe(local)
        for p, subject in enumerate(subjects):
            with st.lock:
                ps = st.partitions[(local, p)] = PartitionState(-1)
            if p >= info.partitions:
                self._hold((local, p), f"the local topic {local!r} has {info.partitions} "
                           f"partition(s), the rule names {len(subjects)} subjects: add partitions")
                continue
            if self.remote.remote_partitions(subject) is None:
                ps.error = f"{self.remote.name} has no subject {subject!r} (yet)"
                continue  # `missing`: a new session takes it up once it is there
            local_of[(subject, 0)] = (local, p)
            try:
                c = self._local_cursor(reader, local, p, subject, info.start_offsets[p],
                                       info.end_offsets[p], remote_partition=0)
            except NotAMirrorError as e:
                self._hold((local, p), str(e))
                continue
            cursors[(subject, 0)] = ps.cursor = c

    def _local_cursor(self, reader: BatchReader, local: str, p: int, rtopic: str,
                      start: int, end: int, remote_partition: int | None = None) -> int:
        rp = p if remote_partition is None else remote_partition
        if end <= start:
            return self.remote.remote_start(rtopic, rp)  # nothing here yet: all the target has
        batches, _, _ = reader.read(local, p, end - 1)
        last = batches[-1].records(local, p)[-1]
        want = f"{self.cfg.name}/{rtopic}/{rp}/"
        for k, v in last.headers:
            if k == REMOTE_HEADER and v is not None and v.decode(errors="replace").startswith(want):
                tail = v.decode()[len(want):]
                if tail.isdigit():
                    return int(tail) + 1
        raise NotAMirrorError(
            f"{local}-{p} ends with a record (offset {last.offset}) that link {self.cfg.name} did "
            f"not bring down from {rtopic}-{rp}: something else writes there; bring the topic "
            "down into a local topic of its own")

    def _refuse(self, rtp: tuple[str, int], ltp: tuple[str, int], e: TargetRefusedError) -> None:
        """The target refuses to let this subject be read for now (a NATS permission): shown
        in status (`held`, starting REFUSED), logged once, asked again on a backoff
        (refused.py) while the others come down, as the up direction does (link.py)."""
        new, wait = self._refused.refuse(rtp)
        text = Exception.__str__(e)
        self.status.partitions[ltp].error = (f"REFUSED by the target (asked again in "
                                             f"{wait:.0f} s): {text}")
        if new:
            log.warning("link %s: %s refused by the target, asked again on a backoff (the "
                        "others come down meanwhile): %s", self.label, rtp[0], text)

    def _taken(self, rtp: tuple[str, int], ltp: tuple[str, int]) -> None:
        if self._refused.clear(rtp):
            self.status.partitions[ltp].error = ""
            log.info("link %s: %s taken by the target again: coming down", self.label, rtp[0])

    def _ask_refused_again(self, local_of: dict[tuple[str, int], tuple[str, int]],
                           cursors: dict[tuple[str, int], int]) -> None:
        """The refused subjects whose backoff is over, assigned again from their cursors."""
        due = [rtp for rtp in self._refused.due() if rtp in local_of and rtp in cursors]
        if not due:
            return
        refused = self.remote.assign({rtp: cursors[rtp] for rtp in due})
        for rtp in due:
            if rtp in refused:
                self._refuse(rtp, local_of[rtp], refused[rtp])
            else:
                self._taken(rtp, local_of[rtp])

    def _hold(self, tp: tuple[str, int], why: str) -> None:
        self.status.partitions[tp].error = why
        log.error("link %s: %s-%d held: %s; until an operator acts (docs/REPLICATION.md)",
                  self.label, tp[0], tp[1], why)
