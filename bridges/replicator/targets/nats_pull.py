"""The NATS target as a Remote: a JetStream subject brought down into a local topic
(direction: down; docs/REPLICATION.md, "Bringing topics down from NATS").

A rule's `remote` is one subject (no wildcards) of the link's `down_stream` (default: its
`stream`); it is one partition, and its "offsets" are the stream sequences of its messages. The
cursor is pull.py's, the local topic's last `edgebus-remote` header: each session makes a fresh
ephemeral pull consumer (ack none, in memory) starting at that sequence, so a consumer deleted
or reset at the server, or lost with the replicator, changes nothing; a consumer that skips (its
delivery count jumps) or vanishes ends the session, and the next starts again from the header.

Gaps (the stream's limits deleted messages before they came down) are found by the stream's
first sequence: limits delete from the front, so a message of the subject between the position
and a newly delivered one can only be gone if the first sequence passed the position. `safe` is
the sequence below which every message of the subject is known delivered: the position, or,
after a pull that found the subject at its end, the stream's last sequence read before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

from bridges.replicator.config import LinkConfig
from bridges.replicator.targets import nats_codec as C
from bridges.replicator.targets.base import Pulled, RemoteRecord, TargetRefusedError
from bridges.replicator.targets.nats import NatsTarget
from bridges.replicator.targets.nats_errors import (
    ERR_STREAM_NOT_FOUND,
    NatsUnavailableError,
    api_error,
)

PULL_MESSAGES = 500  # one pull request's batch: bounded memory per round


@dataclass
class _Consumer:
    name: str
    inbox: str
    sub: Any
    position: int  # the next stream sequence wanted
    safe: int  # every message of the subject below this one has been delivered
    delivered: int = 0  # the consumer's own count: a jump means it skipped
    held: bool = False  # a gap was found: read no further (pull.py holds the partition)


class NatsRemote(NatsTarget):
    """Reads subjects of one stream; shares NatsTarget's connection and private event loop."""

    def __init__(self, cfg: LinkConfig, node: str, timeout: float = 10.0) -> None:
        super().__init__(cfg, node, timeout)
        assert cfg.nats is not None
        self.stream = cfg.nats.down_stream or cfg.nats.stream
        self.name = f"nats stream {self.stream}"
        self._subjects: list[str] = []
        self._consumers: dict[str, _Consumer] = {}
        self._last_seq = 0  # the stream's last sequence at the previous stream info
        self._gaps: dict[tuple[str, int], str] = {}  # reported by the next pull
        # Subjects whose pull request the server refused: reported by this pull, not read.
        self._refused_now: dict[tuple[str, int], TargetRefusedError] = {}

    def _ensure_stream(self) -> None:
        """Down: the back office's stream is never made here; until it is there, its subjects
        wait (remote_partitions says None, pull.py asks again)."""
        self._consumers.clear()
        self._gaps.clear()
        self._refused_now.clear()

    def _stream_info(self) -> dict[str, Any]:
        info = self._run(self._api(f"$JS.API.STREAM.INFO.{self.stream}", {}))
        err = info.get("error")
        if err:
            raise api_error(err, f"{self.where}: ")
        self._subjects = list(info.get("config", {}).get("subjects") or [])
        return info

    def connect_pull(self) -> None:
        self.connect()

    def remote_partitions(self, topic: str) -> int | None:
        """1 when the stream takes the subject, None when it does not (yet)."""
        info = self._run(self._api(f"$JS.API.STREAM.INFO.{self.stream}", {}))
        err = info.get("error")
        if err and err.get("err_code") == ERR_STREAM_NOT_FOUND:
            return None
        if err:
            raise api_error(err, f"{self.where}: ")
        subjects = info.get("config", {}).get("subjects") or []
        return 1 if any(C.takes(f, topic) for f in subjects) else None

    def subjects(self, subject_filter: str, limit: int) -> list[str]:
        """The concrete subjects of the stream that match a filter with wildcards (those holding
        messages now), sorted; at most `limit` of them are asked for (the stream info pages
        them), so a stream with a flood of subjects costs one bounded answer."""
        info = self._run(self._api(f"$JS.API.STREAM.INFO.{self.stream}",
                                   {"subjects_filter": subject_filter}))
        err = info.get("error")
        if err and err.get("err_code") == ERR_STREAM_NOT_FOUND:
            return []
        if err:
            raise api_error(err, f"{self.where}: ")
        return sorted(info.get("state", {}).get("subjects") or {})[:limit]

    def remote_start(self, topic: str, partition: int) -> int:
        return max(1, int(self._stream_info()["state"].get("first_seq", 1)))

    def assign(self, positions: dict[tuple[str, int], int]
               ) -> dict[tuple[str, int], TargetRefusedError]:
        """A consumer per subject; those the link's user may not create are refused (returned),
        the others read."""
        refused: dict[tuple[str, int], TargetRefusedError] = {}
        if not positions:
            return refused
        self._last_seq = int(self._stream_info()["state"].get("last_seq", 0))
        for (subject, _), seq in positions.items():
            try:
                self._consumers[subject] = self._run(self._create(subject, max(1, seq)))
            except TargetRefusedError as e:
                refused[(subject, 0)] = e
        return refused

    async def _create(self, subject: str, seq: int) -> _Consumer:
        ns = 1_000_000_000
        # Named, with the subject in the API subject ($JS.API.CONSUMER.CREATE.<stream>.<name>.
        # <filter>, nats-server 2.10+), so that an operator can allow this link's user the
        # consumers of some subjects only, and a denial names the subject it is about.
        name = f"edgebus-{uuid.uuid4().hex[:16]}"
        cfg = {"name": name, "deliver_policy": "by_start_sequence", "opt_start_seq": seq,
               "ack_policy": "none", "filter_subject": subject, "mem_storage": True,
               "num_replicas": 1, "max_waiting": 4,
               # Gone by itself when the replicator is (a SIGKILL leaves it behind).
               "inactive_threshold": int(max(30.0, 6 * self.cfg.heartbeat_s) * ns)}
        api = f"$JS.API.CONSUMER.CREATE.{self.stream}.{name}.{subject}"
        ans = await self._api_unless_denied(api, {"stream_name": self.stream, "config": cfg},
                                            subject)
        if ans.get("error"):
            raise api_error(ans["error"], f"{self.name}: consumer for {subject}: ")
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        sub = await self._nc.subscribe(inbox)
        return _Consumer(ans["name"], inbox, sub, seq, seq)

    async def _api_unless_denied(self, api: str, body: dict[str, Any], subject: str
                                 ) -> dict[str, Any]:
        """A JetStream API request, or TargetRefusedError when the server refuses the link's
        user publishing it: the server drops a denied message and says so (-ERR) before it
        answers the PING that follows, so a denial is known at once, not after a timeout."""
        nc = self._nc
        self._access.denied.pop(api.lower(), None)
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        sub = await nc.subscribe(inbox, max_msgs=1)
        try:
            await nc.publish(api, json.dumps(body).encode(), reply=inbox)
            await nc.flush(timeout=self.timeout)
            self._refused_if_denied(api, subject, "create a consumer of", api)
            msg = await sub.next_msg(timeout=self.timeout)
            return dict(json.loads(msg.data))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _refused_if_denied(self, api: str, subject: str, what: str, allow: str) -> None:
        """TargetRefusedError when the server refused the link's user publishing `api`."""
        why = self._access.denied.get(api.lower())
        if why is not None:
            raise TargetRefusedError(
                f"{self.name}: the NATS server refuses this link's user to {what} {subject} "
                f"({why}): allow it to publish to {allow} in the user's permissions at the "
                "server")

    def pull(self, wait_s: float) -> Pulled:
        if self._gaps:  # found last time after records that had to be written first
            out, self._gaps = Pulled(gaps=self._gaps), {}
            return out
        out = Pulled(answered=True)  # every pull request is answered (messages, or 408)
        # Half the request timeout (one heartbeat) past the wait: with the stream info below,
        # a half-open link is given up within two heartbeats of the last answer (pull.py).
        got = self._run(self._fetch_all(wait_s), wait_s + self.timeout / 2)
        out.refused, self._refused_now = self._refused_now, {}
        if not got:
            # No subject read (none is in the stream yet, or all are held or refused): no
            # stream info, which is only for the gap check of what was read. The stream may
            # not exist yet, and its "not found" would end the session with a WARNING every
            # pull round (an error loop) instead of waiting for pull.py's look for it. A
            # _last_seq left older only makes the next gap check stricter.
            return out
        before, info = self._last_seq, self._stream_info()
        first = int(info["state"].get("first_seq", 0))
        self._last_seq = int(info["state"].get("last_seq", 0))
        for subject, (msgs, at_end) in got.items():
            c = self._consumers[subject]
            recs: list[RemoteRecord] = []
            for m in msgs:
                md = m.metadata
                if md.sequence.consumer != c.delivered + 1:
                    raise NatsUnavailableError(
                        f"{self.name}: the consumer of {subject} skipped from delivery "
                        f"{c.delivered} to {md.sequence.consumer}; reading again from the local "
                        "topic's last record")
                seq = md.sequence.stream
                if seq > c.safe and first > c.safe:
                    self._gaps[(subject, 0)] = (
                        f"messages of {subject} from stream sequence {c.safe} on may be gone: "
                        f"the stream's limits deleted up to {first - 1} before they were "
                        f"brought down (the next one there is {seq})")
                    c.held = True
                    break
                c.delivered = md.sequence.consumer
                recs.append(_record(seq, int(md.timestamp.timestamp() * 1000), m.headers, m.data))
                c.position = c.safe = seq + 1
            if recs:
                out.records[(subject, 0)] = recs
                # The subject's messages still in the stream after these (the consumer's count).
                out.behind[(subject, 0)] = int(msgs[len(recs) - 1].metadata.num_pending or 0)
            elif (subject, 0) in self._gaps:
                out.gaps[(subject, 0)] = self._gaps.pop((subject, 0))
            if at_end and (subject, 0) not in self._gaps and (subject, 0) not in out.gaps:
                if first <= c.safe:
                    c.safe = max(c.safe, before + 1)  # see the module's docstring
                out.at_end[(subject, 0)] = c.position  # caught up: other subjects are no lag
        return out

    async def _fetch_all(self, wait_s: float) -> dict[str, tuple[list[Any], bool]]:
        subjects = [s for s, c in self._consumers.items() if not c.held]
        if not subjects:
            await asyncio.sleep(wait_s)  # all held: idle, never spinning
        body = json.dumps({"batch": PULL_MESSAGES, "expires": int(wait_s * 1e9),
                           "no_wait": True}).encode()
        for s in subjects:
            self._access.denied.pop(self._next_api(s).lower(), None)
            await self._nc.publish(self._next_api(s), body, reply=self._consumers[s].inbox)
        # The server says a pull request was denied (-ERR) before it answers this PING: a
        # denial is known now, not after a request unanswered until the timeout (which ended
        # the session, every subject's). One round trip per round.
        await self._nc.flush(timeout=self.timeout)
        for s in list(subjects):
            try:
                self._refused_if_denied(self._next_api(s), s, "read",
                                        f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.*")
            except TargetRefusedError as e:
                self._refused_now[(s, 0)] = e
                c = self._consumers.pop(s)
                with contextlib.suppress(Exception):
                    await c.sub.unsubscribe()
                subjects.remove(s)
        res = await asyncio.gather(*(self._fetch(self._consumers[s], wait_s) for s in subjects))
        return dict(zip(subjects, res, strict=True))

    def _next_api(self, subject: str) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self._consumers[subject].name}"

    async def _fetch(self, c: _Consumer, wait_s: float) -> tuple[list[Any], bool]:
        """One pull request's messages (it was sent), and whether it ended because there were
        no more."""
        msgs: list[Any] = []
        while len(msgs) < PULL_MESSAGES:
            m = await c.sub.next_msg(timeout=wait_s + self.timeout)
            # A status (no reply subject: not a stream message): "NATS/1.0 408 ..." and such.
            status = (m.headers or {}).get("Status") if not m.reply else None
            if status is not None:
                if status in ("404", "408"):
                    return msgs, True  # no (more) messages within the wait
                raise NatsUnavailableError(f"{self.where}: pull from {c.name}: status {status} "
                                           f"{m.headers.get('Description', '')}")
            msgs.append(m)
        return msgs, False

    def heartbeat(self, timeout: float | None = None) -> None:
        """A round trip, and each consumer still there (one deleted at the server ends the
        session: the next makes new ones from the local cursor)."""
        if not self._consumers:
            super().heartbeat(timeout)
        for c in self._consumers.values():
            ans = self._run(self._api(f"$JS.API.CONSUMER.INFO.{self.stream}.{c.name}", {}),
                            timeout)
            if ans.get("error"):
                raise NatsUnavailableError(f"{self.where}: consumer {c.name}: "
                                           f"{ans['error'].get('description')}")

    def close(self) -> None:
        self._consumers.clear()
        super().close()


def _record(seq: int, stored_ms: int, headers: dict[str, str] | None, payload: bytes
            ) -> RemoteRecord:
    """A message as a record: as the up direction wrote it (nats_codec), or, from any other
    publisher, its payload with no key, its headers, the time the stream stored it."""
    h = dict(headers or {})
    if C.GAP in h and C.MSG_ID in h:  # an up direction's gap marker: a gap, not a record
        return RemoteRecord(seq, stored_ms, None, payload, [], gap=h[C.GAP])
    if C.TIMESTAMP in h and C.MSG_ID in h:
        try:
            _, ts, key, value, hdrs = C.decode(h, payload)
            return RemoteRecord(seq, ts, key, value, hdrs)
        except ValueError:
            pass  # not as nats_codec writes them: taken as a foreign message's headers
    hdrs2: list[tuple[str, bytes | None]] = [
        (n, v.encode()) for n, v in h.items() if not n.lower().startswith(("nats-", "status"))]
    return RemoteRecord(seq, stored_ms, None, payload, hdrs2)
