"""Subjects a NATS cluster refuses for now, one partition at a time (docs/REPLICATION.md, "NATS
JetStream"): one no subject filter of the stream takes (its publish finds no responder), and one
the link's NATS user may not publish to (the server answers `-ERR 'Permissions Violation for
Publish to "..."'` and drops the messages, so the PubAck never comes). Either looked like a
cluster in trouble and took the whole link down on every session; now the partition is refused
(TargetRefusedError: REFUSED in status, asked again on a backoff, bridges/replicator/refused.py)
and the others ship.

Asking again: the stream's filters are read again; a subject denied before is probed with one
message JetStream must refuse whatever it holds (Nats-Expected-Last-Subject-Sequence far past
any sequence: nothing is stored), followed by a PING: the server handles a connection's messages
in order, so a permission violation is reported before the PONG (no timeout to wait out).
"""

from __future__ import annotations

import re
from typing import Any

from bridges.replicator.targets import nats_codec as C
from bridges.replicator.targets.base import TargetRefusedError

# nats-py lowercases the server's -ERR text, the subject in it too: denials are kept by the
# lowercased subject (two subjects that differ in case only would share one; a refusal of the
# other is then probed once and cleared).
_DENIED = re.compile(r'permissions violation for publish to "?([^"\s]+)"?', re.IGNORECASE)
# Above any stream sequence JetStream can reach (its sequences are uint64 from 1; int64 max is
# what every client library parses): a message expecting it as the subject's last is refused.
_NEVER = str(2**63 - 1)


class SubjectAccess:
    """What the link knows of the stream's subjects and of its user's publish permissions. Kept
    by the target across sessions (a denial is learned in one, probed in the next)."""

    def __init__(self, stream: str, name: str) -> None:
        self.stream, self.name = stream, name
        self.filters: list[str] = []  # the stream's subject filters, as last read
        self.denied: dict[str, str] = {}  # subject -> the server's words

    def on_error(self, e: Exception) -> None:
        """nats-py's error callback (the private loop's thread): note a publish denial."""
        m = _DENIED.search(str(e))
        if m:
            self.denied[m.group(1).lower()] = str(e).removeprefix("nats: ")

    def takes(self, subject: str) -> bool:
        return any(C.takes(f, subject) for f in self.filters)

    def not_taken(self, subject: str) -> TargetRefusedError:
        return TargetRefusedError(
            f"{self.name} does not take subject {subject} (its subjects: "
            f"{', '.join(self.filters) or 'none'}): add it to the stream's subjects (`nats stream "
            f"edit {self.stream} --subjects ...`) or give the link a subject_prefix it takes")

    def refusal(self, subject: str) -> TargetRefusedError | None:
        """After a publish to `subject` failed (no PubAck): the refusal, when it was denied."""
        why = self.denied.get(subject.lower())
        if why is None:
            return None
        return TargetRefusedError(
            f"{self.name}: the NATS server refuses this link's user publishing to {subject} "
            f"({why}): allow it in the user's permissions (publish) at the server")

    async def probe(self, nc: Any, subject: str) -> bool:
        """Whether the user may publish to `subject` now (see the module's docstring)."""
        self.denied.pop(subject.lower(), None)
        await nc.publish(subject, b"", headers={"Nats-Expected-Last-Subject-Sequence": _NEVER})
        await nc.flush(timeout=5)
        return subject.lower() not in self.denied

    def is_denied(self, subject: str) -> bool:
        return subject.lower() in self.denied
