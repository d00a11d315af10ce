"""A link's topic rules (the `topics:` list of the replicator's config, config.py): which
topics a link carries and which way, each one's priority class, weight and max_age, and for a
NATS link the subjects (a list, or a filter with wildcards) a down rule brings in. Every error
is a ConfigError naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridges.replicator.nats_wildcards import MAX_SUBJECTS
from edgebus.config import parse_duration
from edgebus.errors import ConfigError

MAX_WEIGHT = 1000


@dataclass(frozen=True)
class TopicRule:
    pattern: str  # a topic name or an fnmatch pattern
    priority: int = 0  # strict: a class ships only when every higher one has nothing to ship
    # "up": local topics matching `pattern` go to the target; "down": the target's topic
    # `remote` (default: the same name) comes into the local topic `pattern` (a plain name).
    direction: str = "up"
    remote: str | None = None
    weight: int = 1  # within a class: each partition's share of a read, in proportion
    max_age_ms: int | None = None  # batches appended longer ago are not shipped (a gap record)
    # NATS down only: several subjects into one local topic, subject i into partition i
    # (`remote` given as a list); empty for every other rule.
    subjects: tuple[str, ...] = ()
    # NATS down by wildcard (`remote` a subject filter): the most subjects, each a local topic,
    # the rule brings down (bridges/replicator/nats_wildcards.py); None: not given.
    max_subjects: int | None = None


def str_key(d: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{where}{key}: expected a non-empty string, got {v!r}")
    return v.strip()


def rules_of(raw: dict[str, Any], where: str, subject_lists: bool = False
           ) -> tuple[TopicRule, ...]:
    topics = raw.get("topics")
    if not isinstance(topics, list) or not topics:
        raise ConfigError(f"{where}topics: expected a non-empty list of topic names or patterns")
    rules = tuple(rule_of(t, f"{where}topics[{j}]") for j, t in enumerate(topics))
    down = [r.pattern for r in rules if r.direction == "down"]
    if len(set(down)) != len(down):
        raise ConfigError(f"{where}topics: two rules bring a target topic down into the same "
                          "local topic")
    for j, r in enumerate(rules):
        if r.subjects and not subject_lists:
            raise ConfigError(f"{where}topics[{j}].remote: a list (several subjects into one "
                              "topic's partitions) is for target: nats; name one remote topic")
        if r.max_subjects is not None and not subject_lists:
            raise ConfigError(f"{where}topics[{j}].max_subjects: for target: nats (a remote "
                              "subject filter with wildcards)")
    return rules


def rule_of(raw: Any, where: str) -> TopicRule:
    if isinstance(raw, str) and raw.strip():
        return TopicRule(raw.strip())
    if (isinstance(raw, dict)
            and set(raw) <= {"pattern", "priority", "direction", "remote", "weight", "max_age",
                             "max_subjects"}
            and "pattern" in raw):
        prio = raw.get("priority", 0)
        if isinstance(prio, bool) or not isinstance(prio, int) or not -100 <= prio <= 100:
            raise ConfigError(f"{where}.priority: expected a whole number in [-100, 100], got {prio!r}")
        pattern = str_key(raw, "pattern", where + ".")
        direction = raw.get("direction", "up")
        if direction not in ("up", "down"):
            raise ConfigError(f"{where}.direction: expected up or down, got {direction!r}")
        subjects: tuple[str, ...] = ()
        if isinstance(raw.get("remote"), list):
            subjects = tuple(raw["remote"])
            if (not subjects or not all(isinstance(x, str) and x for x in subjects)
                    or len(set(subjects)) != len(subjects)):
                raise ConfigError(f"{where}.remote: expected one name, or a list of distinct "
                                  f"NATS subjects (subject i into partition i), got {subjects!r}")
            remote = None
        else:
            remote = str_key(raw, "remote", where + ".") if "remote" in raw else None
        if direction == "up" and (remote is not None or subjects):
            raise ConfigError(f"{where}.remote: only for direction: down (the name up there is "
                              "the target's business: kafka.topic)")
        max_subjects = raw.get("max_subjects")
        if max_subjects is not None and (
                isinstance(max_subjects, bool) or not isinstance(max_subjects, int)
                or not 1 <= max_subjects <= MAX_SUBJECTS):
            raise ConfigError(f"{where}.max_subjects: expected a whole number in "
                              f"[1, {MAX_SUBJECTS}], got {max_subjects!r}")
        if direction == "down" and (any(c in pattern for c in "*?[") or pattern.startswith("__")):
            raise ConfigError(f"{where}.pattern: a topic brought down is named exactly (the "
                              f"local topic it fills), got {pattern!r}")
        weight = raw.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_WEIGHT:
            raise ConfigError(f"{where}.weight: expected a whole number in [1, {MAX_WEIGHT}], "
                              f"got {weight!r}")
        max_age = None
        if raw.get("max_age") is not None:
            try:
                max_age = parse_duration(raw["max_age"])
            except ValueError as e:
                raise ConfigError(f"{where}.max_age: {e}") from None
            if max_age <= 0:
                raise ConfigError(f"{where}.max_age: expected a positive duration, got {max_age}")
        return TopicRule(pattern, prio, direction, remote, weight, max_age, subjects,
                         max_subjects)
    raise ConfigError(f"{where}: expected a topic name or pattern, or {{pattern: ..., priority: N, "
                      "weight: N, max_age: DURATION, direction: up|down, remote: NAME}")
