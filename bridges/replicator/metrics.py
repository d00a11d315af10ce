"""The replicator's Prometheus metrics, fresh at each scrape from every link's status.

    edgebus_replicator_link_up{link}                       1 while the link is up
    edgebus_replicator_sessions_total{link}                sessions started (reconnects + 1)
    edgebus_replicator_lag_records{link,topic,partition}   source log end - target log end
    edgebus_replicator_lag_bytes{link,topic,partition}     bytes of log from the cursor to the
                                                           source's end (kafka/nats down: estimated)
    edgebus_replicator_lag_seconds{link,topic,partition}   age of the oldest record not shipped
    edgebus_replicator_shipped_records_total{...}          offsets the target moved by
    edgebus_replicator_shipped_bytes_total{...}            bytes of batches shipped
    edgebus_replicator_already_there_total{...}            batches the target already held
    edgebus_replicator_held{link,topic,partition}          1 while held (a gap, a recreated source)
    edgebus_replicator_gap_records_total{...}              offsets the source's retention deleted
                                                           before they were shipped (gap records)
    edgebus_replicator_expired_records_total{...}          offsets past max_age, not shipped
    edgebus_replicator_wire_bytes_total{link}              bytes of batches as sent (compressed)
    edgebus_replicator_refused_subjects_total{link}        NATS subjects a wildcard rule refused
    edgebus_replicator_rule_subjects{link,rule}            subjects a NATS wildcard down rule
                                                           brings down (rule: its filter)
    edgebus_replicator_rule_lag_records{link,rule}         records behind, over all its subjects
    edgebus_replicator_rule_lag_seconds{link,rule}         the most behind of its subjects
    edgebus_replicator_rule_held{link,rule}                its subjects held

A wildcard rule's partition series are its LISTED_PER_RULE (20) most behind subjects, so a rule
with thousands of subjects does not make a scrape of thousands of rows; its rule_* series count
them all.

A link's down direction (topics brought down from the target, pull.py) is the link
"<name>:down": lag is the target's end minus the local copy's, topic the local topic.

The per-session counters restart with each session (they count what that session shipped); the
gap and expired counters count since the replicator started (the target's gap records are the
lasting account).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from bridges.replicator.link import LinkRunner
from bridges.replicator.pull import PullRunner

PREFIX = "edgebus_replicator_"


class ReplicatorCollector:
    def __init__(self, runners: Sequence[LinkRunner | PullRunner]) -> None:
        self.runners = runners

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        up = GaugeMetricFamily(PREFIX + "link_up", "1 while the link is up", labels=["link"])
        sessions = CounterMetricFamily(PREFIX + "sessions", "Sessions started", labels=["link"])
        labels = ["link", "topic", "partition"]
        lag = GaugeMetricFamily(PREFIX + "lag_records", "Source log end minus target log end",
                                labels=labels)
        lag_b = GaugeMetricFamily(PREFIX + "lag_bytes", "Bytes of log from the target's "
                                  "cursor to the source's log end", labels=labels)
        lag_s = GaugeMetricFamily(PREFIX + "lag_seconds",
                                  "Age of the oldest record not yet shipped (its append time)",
                                  labels=labels)
        shipped = CounterMetricFamily(PREFIX + "shipped_records", "Records shipped this session",
                                      labels=labels)
        shipped_b = CounterMetricFamily(PREFIX + "shipped_bytes", "Bytes shipped this session",
                                        labels=labels)
        dups = CounterMetricFamily(PREFIX + "already_there",
                                   "Batches the target already held this session", labels=labels)
        held = GaugeMetricFamily(PREFIX + "held", "1 while the partition is held", labels=labels)
        gaps = CounterMetricFamily(PREFIX + "gap_records",
                                   "Records deleted by the source's retention before they were "
                                   "shipped (a gap record at the target)", labels=labels)
        expired = CounterMetricFamily(PREFIX + "expired_records",
                                      "Records older than max_age, not shipped (a gap record at "
                                      "the target)", labels=labels)
        wire = CounterMetricFamily(PREFIX + "wire_bytes", "Bytes of batches as sent on the link "
                                   "(after compression)", labels=["link"])
        refused = CounterMetricFamily(PREFIX + "refused_subjects", "NATS subjects a wildcard "
                                      "down rule refused (invalid name, max_subjects, access rules)",
                                      labels=["link"])
        rl = ["link", "rule"]
        rule_subjects = GaugeMetricFamily(PREFIX + "rule_subjects", "Subjects a NATS wildcard "
                                          "down rule brings down", labels=rl)
        rule_lag = GaugeMetricFamily(PREFIX + "rule_lag_records", "Records behind, summed over "
                                     "a wildcard rule's subjects", labels=rl)
        rule_lag_s = GaugeMetricFamily(PREFIX + "rule_lag_seconds", "The most behind of a "
                                       "wildcard rule's subjects, in seconds", labels=rl)
        rule_held = GaugeMetricFamily(PREFIX + "rule_held", "A wildcard rule's subjects held",
                                      labels=rl)
        for r in self.runners:
            snap = r.status.snapshot()
            if "refused_count" in snap:
                refused.add_metric([r.label], snap["refused_count"])
            # Per rule over all of its subjects; the partition series below list at most
            # LISTED_PER_RULE of them (pull_wildcards.py), so a scrape stays bounded.
            for rule in snap.get("rules", ()):
                rv = [r.label, rule["filter"]]
                rule_subjects.add_metric(rv, rule["subjects"])
                if rule["lag_records"] is not None:
                    rule_lag.add_metric(rv, rule["lag_records"])
                rule_lag_s.add_metric(rv, rule["lag_seconds"])
                rule_held.add_metric(rv, rule["held"])
            up.add_metric([r.label], 1 if snap["state"] == "up" else 0)
            wire.add_metric([r.label], getattr(getattr(r, "target", None), "wire_bytes", 0))
            sessions.add_metric([r.label], snap["sessions"])
            for p in snap["partitions"]:
                lv = [r.label, p["topic"], str(p["partition"])]
                if p["lag_records"] is not None:
                    lag.add_metric(lv, p["lag_records"])
                if p.get("lag_bytes") is not None:
                    lag_b.add_metric(lv, p["lag_bytes"])
                lag_s.add_metric(lv, p["lag_seconds"])
                shipped.add_metric(lv, p["shipped_records"])
                shipped_b.add_metric(lv, p["shipped_bytes"])
                dups.add_metric(lv, p["already_there"])
                held.add_metric(lv, 1 if p["held"] else 0)
                gaps.add_metric(lv, p["gap_records"])
                expired.add_metric(lv, p["expired_records"])
        yield from (up, sessions, lag, lag_b, lag_s, shipped, shipped_b, dups, held, gaps, expired, wire,
                    refused, rule_subjects, rule_lag, rule_lag_s, rule_held)
