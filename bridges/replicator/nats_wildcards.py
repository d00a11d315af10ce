"""NATS down rules by wildcard: every concrete subject a `remote` filter matches comes down into a
local topic of its own, named by the rule's `pattern` with the wildcards' tokens put in
(docs/REPLICATION.md, "NATS subjects by wildcard").

    topics:
      - {pattern: "commands.{1}", direction: down, remote: "office.commands.*"}
      - {pattern: "alarms.{1}.{2}", direction: down, remote: "office.*.alarms.>", max_subjects: 20}

`{i}` is the token the i-th wildcard of `remote` matched (`*`: one token; `>`, last: every token
left, joined by "."), as NATS's own subject mapping numbers them (`{{wildcard(i)}}`). The pattern
must name every wildcard, so that two subjects never share a topic (each topic's cursor is the
subject in its last record's header). The subjects come from the other side: what they make is
checked like any topic name (edgebus.config.check_topic_name: letters, digits, '.', '_', '-', at
most 200 characters, no leading '__' or '.'), and at most `max_subjects` topics come from one
rule, so a hostile or runaway publisher cannot create arbitrary topics here; the supervisor's
access rules and `limits.max_topics` decide the creation as for any client.
"""

from __future__ import annotations

import re

from edgebus.config import check_topic_name
from edgebus.errors import InvalidTopicError, TopicLimitError

# Topics one wildcard rule may bring down when the rule does not say (`max_subjects`), and the
# most it may say: each is a topic here, a consumer at the NATS server and a cursor.
DEFAULT_MAX_SUBJECTS = 100
MAX_SUBJECTS = 10_000
MAX_QUOTED = 256  # characters of a subject quoted in messages and status
_TOKEN = re.compile(r"[A-Za-z0-9_-]+|\*|>")
_PLACEHOLDER = re.compile(r"\{(\d+)\}")


def is_wildcard(remote: str) -> bool:
    return any(tok in ("*", ">") for tok in remote.split("."))


def wildcard_problem(remote: str, pattern: str) -> str | None:
    """Why a wildcard rule cannot be used (the config check), or None."""
    toks = remote.split(".")
    if not all(_TOKEN.fullmatch(t) for t in toks) or ">" in toks[:-1]:
        return (f"expected a NATS subject filter (tokens of letters, digits, '_', '-', or the "
                f"wildcards '*' and, last, '>', separated by '.'), got {remote!r}")
    n = sum(t in ("*", ">") for t in toks)
    used = {int(i) for i in _PLACEHOLDER.findall(pattern)}
    if used != set(range(1, n + 1)):
        return (f"the local topic pattern {pattern!r} must name each of the {n} wildcard(s) of "
                f"{remote!r} as {{1}}..{{{n}}} (no others), so that each subject has a topic of "
                "its own")
    try:  # the fixed part of the pattern must make a valid name with plain tokens put in
        check_topic_name(_PLACEHOLDER.sub("x", pattern))
    except InvalidTopicError as e:
        return f"the local topic pattern {pattern!r}: {e}"
    return None


def wildcard_tokens(remote: str, subject: str) -> list[str] | None:
    """The tokens each wildcard of `remote` matched in `subject`, None when it does not match."""
    f, s = remote.split("."), subject.split(".")
    out: list[str] = []
    for i, tok in enumerate(f):
        if tok == ">":
            if len(s) <= i:
                return None
            out.append(".".join(s[i:]))
            return out
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return None
        if tok == "*":
            out.append(s[i])
    return out if len(f) == len(s) else None


def topic_for(remote: str, pattern: str, subject: str) -> str:
    """The local topic of one concrete subject; InvalidTopicError (naming the subject) when the
    name it makes is not a valid topic name."""
    tokens = wildcard_tokens(remote, subject)
    if tokens is None:
        raise InvalidTopicError(f"subject {short(subject)!r} does not match {remote!r}")
    name = _PLACEHOLDER.sub(lambda m: tokens[int(m.group(1)) - 1], pattern)
    try:
        check_topic_name(name)
    except InvalidTopicError as e:
        raise InvalidTopicError(f"subject {short(subject)!r} would make topic {short(name)!r}: "
                                f"{e}") from None
    return name


def made_by(remote: str, pattern: str, topic: str) -> bool:
    """Whether a wildcard rule may have made this local topic (it is never shipped back up)."""
    if not is_wildcard(remote):
        return False
    kinds = [t for t in remote.split(".") if t in ("*", ">")]
    rx = re.escape(pattern)
    for i, kind in enumerate(kinds, 1):
        rx = rx.replace(re.escape(f"{{{i}}}"), "[^.]+" if kind == "*" else ".+")
    return re.fullmatch(rx, topic) is not None


class SubjectLimitError(TopicLimitError):
    """A wildcard rule already brings its max_subjects subjects down: no topic for another."""

    hint = ("raise the rule's max_subjects if these subjects are expected, or find out who "
            "publishes them at the NATS side")


def over_limit(remote: str, limit: int, subject: str) -> SubjectLimitError:
    return SubjectLimitError(
        f"subject {short(subject)!r} not brought down: the rule for {remote!r} already brings "
        f"{limit} subjects down (its max_subjects)")


def short(subject: str) -> str:
    """A subject as messages quote it: the other side chose it, so its length is bounded here."""
    return subject if len(subject) <= MAX_QUOTED else subject[:MAX_QUOTED] + "..."
