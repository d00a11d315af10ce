"""Which concrete subjects a NATS down rule with wildcards brings down, and into which topics
(the naming rule: nats_wildcards.py; the reading: pull.py, a subject at a time as for a listed
subject). Kept per link direction across sessions, so that a subject once taken keeps its place
under the rule's max_subjects, and each refusal is logged once.

Refused, never created: a subject whose topic name would be invalid, one whose name another
subject of the rule already makes, one past max_subjects, and one the supervisor refuses to
create (its access rules, limits.max_topics). The last can end without a restart (an operator
changes an access rule or deletes topics): such a subject is asked again on a backoff, 5 s
doubling to 60 s (refused.py); the others stand until the replicator restarts with another
config. Refusals are shown in status (`refused_subjects`,
at most REFUSED_KEPT of them, and their count) and logged, at most REFUSED_LOGGED lines per rule
so that a flood of subjects cannot flood the log.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from bridges.replicator.config import TopicRule
from bridges.replicator.nats_wildcards import DEFAULT_MAX_SUBJECTS, over_limit, short, topic_for
from bridges.replicator.refused import Refused
from edgebus.errors import EdgebusError, InvalidTopicError

log = logging.getLogger("edgebus.replicator")

REFUSED_KEPT = 100  # refusals status names (the count goes on)
REFUSED_REMEMBERED = 10_000  # refused subjects a rule skips without checking again
REFUSED_LOGGED = 10  # WARNING lines per rule; then one line says the rest are in status only
# Partitions of one wildcard rule listed in status and metrics, the most behind first: a rule
# may bring up to 10,000 subjects down, and a status document (or a Prometheus scrape) with a
# row per subject grows with them. The rule's own summary (status `rules`) counts them all.
LISTED_PER_RULE = 20


@dataclass
class Refusals:
    """Subjects not brought down, with why: what status shows."""

    reasons: dict[str, str] = field(default_factory=dict)
    count: int = 0
    # The status endpoint reads while the direction's thread adds.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def drop(self, subject: str) -> None:
        """The subject came down after all: no longer shown as refused (the count stays: it
        counts refusals since the start, a Prometheus counter)."""
        with self.lock:
            self.reasons.pop(short(subject), None)

    def add(self, subject: str, why: str) -> bool:
        """Records a refusal; True when it is new (to be logged)."""
        with self.lock:
            if short(subject) in self.reasons:
                return False
            self.count += 1
            if len(self.reasons) < REFUSED_KEPT:
                self.reasons[short(subject)] = why
            return True

    def snapshot(self) -> tuple[dict[str, str], int]:
        with self.lock:
            return dict(self.reasons), self.count


@dataclass
class WildcardRule:
    rule: TopicRule
    label: str  # the direction's name in log lines
    refusals: Refusals  # the direction's, shared by its rules
    taken: dict[str, str] = field(default_factory=dict)  # subject -> local topic
    refused: set[str] = field(default_factory=set)
    refused_count: int = 0  # refusals of this rule since the start (`refused` forgets)
    # Subjects the supervisor refused (access rules, limits): asked again on a backoff.
    retry: Refused = field(default_factory=Refused)
    logged: int = 0

    @property
    def filter(self) -> str:
        return self.rule.remote or self.rule.pattern

    @property
    def limit(self) -> int:
        return self.rule.max_subjects or DEFAULT_MAX_SUBJECTS

    def classify(self, subjects: list[str], existing: set[str]) -> list[tuple[str, str]]:
        """The (subject, topic) pairs newly taken from `subjects` (sorted), refusing the rest.
        Subjects whose topic exists here already go first: a replicator restarted keeps the
        subjects it had, whatever new ones sort before them."""
        named: list[tuple[str, str]] = []
        for s in subjects:
            if s in self.refused and self.retry.is_due(s):
                self.refused.discard(s)  # the supervisor may take it now: asked again
            if s in self.taken or s in self.refused:
                continue
            try:
                named.append((s, topic_for(self.filter, self.rule.pattern, s)))
            except InvalidTopicError as e:
                self.refuse(s, e)
        named.sort(key=lambda st: (st[1] not in existing, st[0]))
        owners = {t: s for s, t in self.taken.items()}
        new: list[tuple[str, str]] = []
        for s, t in named:
            if t in owners:
                self.refuse(s, InvalidTopicError(
                    f"subject {short(s)!r} would make topic {t!r}, which subject "
                    f"{short(owners[t])!r} of the same rule makes: give the rule's pattern a "
                    "separator between wildcards"))
            elif len(self.taken) >= self.limit:
                self.refuse(s, over_limit(self.filter, self.limit, s))
            else:
                self.taken[s] = owners[t] = t
                new.append((s, t))
        self.retry.forget_except(self.refused | set(self.taken))  # bounded by these
        return new

    def refuse(self, subject: str, e: EdgebusError, retry: bool = False) -> None:
        """retry: the supervisor refused it (access rules, limits): asked again on a backoff."""
        self.taken.pop(subject, None)
        if retry:
            self.retry.refuse(subject)
        if len(self.refused) >= REFUSED_REMEMBERED:
            # Bounded memory over a year of churning subjects: forget, check them again.
            self.refused.clear()
        self.refused.add(subject)
        if self.refusals.add(subject, f"{type(e).__name__}: {e}"):
            self.refused_count += 1
            self.logged += 1
            if self.logged <= REFUSED_LOGGED:
                log.warning("link %s: wildcard rule %r: %s: %s", self.label, self.filter,
                            type(e).__name__, e)
            if self.logged == REFUSED_LOGGED:
                log.warning("link %s: further subjects of %r refused are counted in status "
                            "(refused_subjects) only", self.label, self.filter)


class Wildcards:
    """The wildcard rules of one down direction (pull.py keeps one across its sessions)."""

    def __init__(self, label: str, rules: list[TopicRule]) -> None:
        self.refusals = Refusals()
        self.rules = [WildcardRule(r, label, self.refusals) for r in rules]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def summarize(self, partitions: list[dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Status rows bounded per rule, and a summary per rule: (the partitions of
        LinkStatus.snapshot() with at most LISTED_PER_RULE of each rule's, held and most
        behind first; one summary per rule over all of its subjects)."""
        owner = {t: i for i, w in enumerate(self.rules) for t in w.taken.values()}
        mine: list[list[dict[str, Any]]] = [[] for _ in self.rules]
        kept = []
        for p in partitions:
            i = owner.get(p["topic"])
            if i is None:
                kept.append(p)
            else:
                mine[i].append(p)
        rules = []
        for w, rows in zip(self.rules, mine, strict=True):
            rows.sort(key=lambda p: (not p["held"], -(p["lag_records"] or 0), -p["lag_seconds"],
                                     p["topic"]))
            kept += rows[:LISTED_PER_RULE]
            lags = [p["lag_records"] for p in rows if p["lag_records"] is not None]
            rules.append({
                "filter": w.filter, "pattern": w.rule.pattern, "max_subjects": w.limit,
                "subjects": len(rows), "listed": min(len(rows), LISTED_PER_RULE),
                "refused": w.refused_count, "held": sum(1 for p in rows if p["held"]),
                "lag_records": sum(lags) if lags else None,
                "lag_seconds": max((p["lag_seconds"] for p in rows), default=0.0),
                "shipped_records": sum(p["shipped_records"] for p in rows)})
        kept.sort(key=lambda p: (p["topic"], p["partition"]))
        return kept, rules

    def scan_limit(self, w: WildcardRule) -> int:
        """How many of the stream's matching subjects to look at: room for every one taken
        and the rule's limit again, so refusals do not hide a valid subject behind them."""
        return len(w.taken) + 2 * w.limit + 16
