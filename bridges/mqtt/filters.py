"""MQTT topic filters without I/O (routes.py's routes and subscriptions.py use them): checked
as MQTT 5 defines them, matched against topics, compared with each other (overlap, cover: the
first declared route wins, so a covered one is never subscribed), and given stable subscription
identifiers."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

# MQTT strings are at most 65535 bytes (a u16 length prefix).
MAX_MQTT_STRING = 65_535


# --- topic filters -------------------------------------------------------------------------------


def split_shared(filt: str) -> tuple[str | None, str]:
    """("group", "a/+/b") for "$share/group/a/+/b"; (None, filt) for an ordinary filter."""
    if filt.startswith("$share/"):
        rest = filt[len("$share/"):]
        group, sep, inner = rest.partition("/")
        if not sep:
            return group, ""
        return group, inner
    return None, filt


def validate_filter(filt: str) -> None:
    """Raise ValueError unless `filt` is a valid MQTT topic filter (shared subscriptions too)."""
    if not isinstance(filt, str) or not filt:
        raise ValueError("a topic filter must be a non-empty string")
    if len(filt.encode("utf-8")) > MAX_MQTT_STRING:
        raise ValueError(f"a topic filter is at most {MAX_MQTT_STRING} bytes")
    if "\x00" in filt:
        raise ValueError("a topic filter may not contain NUL")
    group, inner = split_shared(filt)
    if group is not None:
        if not group or any(c in group for c in "+#"):
            raise ValueError(f"bad share name {group!r} in {filt!r}")
        if not inner:
            raise ValueError(f"{filt!r}: a shared subscription needs a filter after the share name")
    levels = inner.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"{filt!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise ValueError(f"{filt!r}: '+' must be a whole level")


def validate_topic(topic: str) -> None:
    """Raise ValueError unless `topic` is a valid MQTT topic name to publish to."""
    if not topic:
        raise ValueError("empty MQTT topic")
    if any(c in topic for c in "+#\x00"):
        raise ValueError(f"MQTT topic {topic!r} contains '+', '#' or NUL")
    if len(topic.encode("utf-8")) > MAX_MQTT_STRING:
        raise ValueError(f"MQTT topic longer than {MAX_MQTT_STRING} bytes")


def filter_matches(filt: str, topic: str) -> bool:
    """MQTT matching: '+' is one level, '#' the rest (including the parent level itself); a filter
    starting with a wildcard does not match topics starting with '$' (MQTT 4.7.2)."""
    _, inner = split_shared(filt)
    f_levels, t_levels = inner.split("/"), topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)


def _levels(filt: str) -> list[str]:
    return split_shared(filt)[1].split("/")


def _dollar_excluded(a: list[str], b: list[str]) -> bool:
    """A filter starting with a wildcard matches no '$' topic (MQTT 4.7.2), and a filter starting
    with a '$' level matches only '$' topics."""
    return (a[0] in ("+", "#") and b[0].startswith("$")) or \
        (b[0] in ("+", "#") and a[0].startswith("$"))


def filters_overlap(a: str, b: str) -> bool:
    """True if some topic matches both filters (shared-subscription prefixes ignored)."""
    la, lb = _levels(a), _levels(b)
    if _dollar_excluded(la, lb):
        return False
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else None
        y = lb[i] if i < len(lb) else None
        if x == "#" or y == "#":
            return True  # "a/#" matches "a" too, so a shorter filter ending here still meets it
        if x is None or y is None:
            return False
        if x != "+" and y != "+" and x != y:
            return False
    return True


def filter_covers(a: str, b: str) -> bool:
    """True if every topic matching filter `b` matches filter `a`."""
    la, lb = _levels(a), _levels(b)
    if la[0] in ("+", "#") and lb[0].startswith("$"):
        return False
    if lb[0] in ("+", "#") and la[0] not in ("+", "#"):
        return False  # b matches '$'-less topics that a literal first level of a does not
    for i, x in enumerate(la):
        if x == "#":
            return True
        if i >= len(lb):
            return False
        y = lb[i]
        if y == "#" or (x != "+" and (y == "+" or x != y)):
            return False
    return len(la) == len(lb)


def shadowed(filters: Sequence[str]) -> dict[int, int]:
    """{j: i} for each filter j that an earlier, non-shared filter i covers: with "the first
    declared route wins", j can never win, so it is not subscribed to at all (and so its copies
    cannot double a message). A shared filter shadows nothing: its copy of a message may go to
    another member of the share group."""
    out = {}
    for j, b in enumerate(filters):
        for i in range(j):
            a = filters[i]
            if split_shared(a)[0] is None and filter_covers(a, b):
                out[j] = i
                break
    return out


# MQTT 5 subscription identifiers are 1 .. 268,435,455 (a variable byte integer).
MAX_SUBSCRIPTION_ID = 268_435_455


def subscription_ids(filters: Sequence[str]) -> dict[str, int]:
    """A stable identifier per filter, from a hash of the filter itself: a subscription that an
    older configuration left in the broker's session keeps its identifier, which then cannot be
    taken for a current route's (identifiers by position would collide). Probes on the rare
    collision among the current filters."""
    out: dict[str, int] = {}
    used: set[int] = set()
    for f in filters:
        n = zlib.crc32(f.encode()) % MAX_SUBSCRIPTION_ID + 1
        while n in used:
            n = n % MAX_SUBSCRIPTION_ID + 1
        used.add(n)
        out[f] = n
    return out
