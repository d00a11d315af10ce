"""What a reload can apply and what waits for a restart: the settings two configs differ in.

A reload (edgebus/server/reload.py) applies the keys of LIVE; every other changed key is named,
key by key, as waiting for the next restart (log, `edgebus reload`, `edgebus status`). The list
is worked out against the file as it was at the start, so a change undone in the file before the
restart stops being reported.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Keys (or whole sections) a reload applies; a section name covers every key under it.
# acl: the rules, principals and default (acl.enabled is in RESTART_ONLY_KEYS below).
# http.users_file and replica.tokens_file: the secrets are read again at every reload, so a
# changed file (or path) applies to the next request or link; only while that listener runs.
# log_level: the root logger's level (unless the command line set it: then neither applied nor
# reported, as the command line wins at a restart too).
# limits, log, disk, metrics: on the running parts (edgebus/server/reload_live.py says how).
LIVE = ("topic_defaults", "topics", "acl", "kafka.auto_create_topics", "log_level", "limits",
        "log", "disk", "metrics")
LIVE_WITH_LISTENER = {"http.users_file": "http", "replica.tokens_file": "replica"}
RESTART_ONLY_KEYS = ("acl.enabled",)  # under a LIVE section, but only a restart applies it

# Longest value shown in a report; longer ones are cut (a list of listeners or principals would
# flood a log line), but any path fits whole.
MAX_SHOWN_CHARS = 4096 + 100


def changed_settings(old: Any, new: Any) -> list[str]:
    """Dotted keys whose values differ, in the config's field order: a section's keys one by
    one (`http.listen`), a top-level value by its name (`data_dir`). Fields excluded from
    comparison (`source`) are skipped."""
    out: list[str] = []
    for f in dataclasses.fields(old):
        if not f.compare:
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b) and type(a) is type(b):
            out += [f"{f.name}.{g.name}" for g in dataclasses.fields(a)
                    if g.compare and getattr(a, g.name) != getattr(b, g.name)]
        else:
            out.append(f.name)
    return out


def is_live(key: str, listeners: frozenset[str] = frozenset()) -> bool:
    """Whether a reload applies `key`; `listeners` names the listeners running ("http",
    "replica")."""
    if key in RESTART_ONLY_KEYS:
        return False
    if key in LIVE_WITH_LISTENER:
        return LIVE_WITH_LISTENER[key] in listeners
    return key in LIVE or key.split(".", 1)[0] in LIVE


def value_of(config: Any, key: str) -> str:
    """The value at a dotted key, as a short string for a report."""
    v = config
    for part in key.split("."):
        v = getattr(v, part)
    text = str(v) if v is not None else "null"
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 3] + "..."


def pending_restart(started: Any, file: Any, listeners: frozenset[str] = frozenset(),
                    ignore: frozenset[str] = frozenset()) -> dict[str, tuple[str, str]]:
    """key -> (running value, the file's value) of every changed setting only a restart applies;
    `ignore`: keys the command line sets (the file's value would not apply after a restart
    either)."""
    return {k: (value_of(started, k), value_of(file, k))
            for k in changed_settings(started, file) if k not in ignore and not is_live(k, listeners)}
