"""Routing without I/O: MQTT topic filters and ingress routes (key, validation, headers); egress
topic templates are in templates.py. Plain functions and data, tested without a broker.

Header names written on ingress records (values are UTF-8 bytes):

    mqtt.topic          the MQTT topic the message was published to
    mqtt.qos            "0" or "1": the QoS it was delivered to the bridge with
    mqtt.retain         "1" when the broker delivered a retained message, else "0"
    mqtt.dup            "1" when the broker marked it as a redelivery, else "0"
    mqtt.content_type   the MQTT 5 content type, when there is one
    mqtt.user.NAME      one per MQTT 5 user property NAME (repeats kept, in order)

Dead-lettered records carry the same headers plus:

    edgebus.dlq.reason  why the message was not routed (one line of text)
    edgebus.dlq.route   the ingress filter (or egress topic) of the route that refused it
    edgebus.dlq.truncated  the original payload size, when the payload kept was cut
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bridges.mqtt.filters import filter_matches, split_shared, subscription_ids

# User properties kept as headers: MQTT allows any number within the packet; a bound keeps a
# device from turning one message into thousands of headers.
MAX_USER_PROPERTIES = 64
# Levels of a JSON payload-field path ("a.b.c"); deeper paths are refused at config time.
MAX_FIELD_DEPTH = 16
# Bytes of a key taken from a payload field: keys choose partitions and are stored per record.
MAX_KEY_BYTES = 1024

H_TOPIC, H_QOS, H_RETAIN, H_DUP = "mqtt.topic", "mqtt.qos", "mqtt.retain", "mqtt.dup"
H_CONTENT_TYPE, H_USER_PREFIX = "mqtt.content_type", "mqtt.user."
H_DLQ_REASON, H_DLQ_ROUTE, H_DLQ_TRUNCATED = (
    "edgebus.dlq.reason", "edgebus.dlq.route", "edgebus.dlq.truncated")

Headers = list[tuple[str, bytes | None]]


# --- ingress -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeySpec:
    """Where a record's key comes from: a topic level (0-based), a JSON payload field
    ("device.id"), or nowhere (both None)."""

    topic_level: int | None = None
    payload_field: str | None = None

    @property
    def needs_json(self) -> bool:
        return self.payload_field is not None


@dataclass(frozen=True)
class Validation:
    max_bytes: int = 64 * 1024
    json: bool = False
    required_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class Accepted:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


@dataclass(frozen=True)
class Rejected:
    dead_letter_topic: str
    reason: str
    key: bytes | None
    value: bytes
    headers: Headers


@dataclass(frozen=True)
class IngressRoute:
    filter: str
    topic: str
    dead_letter_topic: str
    qos: int = 1
    key: KeySpec = field(default_factory=KeySpec)
    validate: Validation = field(default_factory=Validation)
    # Payload bytes kept in a dead letter; None: the whole payload, as far as the record fits.
    max_dead_letter_payload: int | None = None
    # A record larger than this (one bridge batch) is dead-lettered rather than appended.
    max_record_bytes: int = 256 * 1024

    def matches(self, topic: str) -> bool:
        return filter_matches(self.filter, topic)

    def process(self, topic: str, payload: bytes, qos: int, retain: bool, dup: bool,
                user_properties: Sequence[tuple[str, str]] = (),
                content_type: str | None = None) -> Accepted | Rejected:
        """The record for one MQTT message, or the dead-letter record saying why not."""
        headers = message_headers(topic, qos, retain, dup, user_properties, content_type)
        reason, key = self._check(topic, payload, user_properties)
        if reason is None:
            size = record_size(key, payload, headers)
            if size <= self.max_record_bytes:
                return Accepted(self.topic, key, payload, headers)
            reason = (f"record of {size} bytes (payload and headers) exceeds the batch limit of "
                      f"{self.max_record_bytes}")
        return self.dead_letter(reason, key, payload, headers)

    def dead_letter(self, reason: str, key: bytes | None, payload: bytes,
                    headers: Headers) -> Rejected:
        """The dead-letter record: the whole payload when it fits in one record of at most
        max_record_bytes (and max_dead_letter_payload, when set); else as much as fits, with
        edgebus.dlq.truncated saying the original size. Headers give way before the payload:
        when they crowd it out, only the MQTT flags are kept."""
        limit = len(payload) if self.max_dead_letter_payload is None \
            else self.max_dead_letter_payload
        extra: Headers = [(H_DLQ_REASON, reason.encode()), (H_DLQ_ROUTE, self.filter.encode())]
        out = headers + extra
        wanted = min(len(payload), limit)
        if record_size(key, payload[:wanted], out) > self.max_record_bytes:
            # Headers too large next to the payload (huge user properties or topic): the flags.
            out = [(k, v if k != H_TOPIC else (v or b"")[:1024]) for k, v in headers[:4]] + extra
        kept = payload
        if len(payload) > limit or record_size(key, payload, out) > self.max_record_bytes:
            out.append((H_DLQ_TRUNCATED, str(len(payload)).encode()))
            room = self.max_record_bytes - record_size(key, b"", out)
            kept = payload[: max(0, min(limit, room))]
        return Rejected(self.dead_letter_topic, reason, key, kept, out)

    def _check(self, topic: str, payload: bytes,
               user_properties: Sequence[tuple[str, str]]) -> tuple[str | None, bytes | None]:
        v = self.validate
        if len(payload) > v.max_bytes:
            return f"payload of {len(payload)} bytes exceeds max_bytes={v.max_bytes}", None
        if len(user_properties) > MAX_USER_PROPERTIES:
            return (f"{len(user_properties)} user properties, at most {MAX_USER_PROPERTIES}",
                    None)
        doc: Any = None
        if v.json or v.required_fields or self.key.needs_json:
            try:
                doc = json.loads(payload)
            except (UnicodeDecodeError, ValueError) as e:
                return f"payload is not valid JSON: {_one_line(e)}", None
        for name in v.required_fields:
            if _lookup(doc, name) is _MISSING:
                return f"required field {name!r} is missing", None
        return extract_key(self.key, topic, doc)


def message_headers(topic: str, qos: int, retain: bool, dup: bool,
                    user_properties: Sequence[tuple[str, str]] = (),
                    content_type: str | None = None) -> Headers:
    headers: Headers = [
        (H_TOPIC, topic.encode()),
        (H_QOS, b"1" if qos else b"0"),
        (H_RETAIN, b"1" if retain else b"0"),
        (H_DUP, b"1" if dup else b"0"),
    ]
    if content_type is not None:
        headers.append((H_CONTENT_TYPE, content_type.encode()))
    for name, value in user_properties[:MAX_USER_PROPERTIES]:
        headers.append((H_USER_PREFIX + name, value.encode()))
    return headers


_MISSING = object()


def _lookup(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


def extract_key(spec: KeySpec, topic: str, doc: Any) -> tuple[str | None, bytes | None]:
    """(None, key) on success, (reason, None) when the key cannot be taken."""
    if spec.topic_level is not None:
        levels = topic.split("/")
        if spec.topic_level >= len(levels):
            return f"topic {topic!r} has no level {spec.topic_level} for the key", None
        level = levels[spec.topic_level]
        if not level:
            return f"level {spec.topic_level} of topic {topic!r} is empty", None
        return None, level.encode()
    if spec.payload_field is not None:
        value = _lookup(doc, spec.payload_field)
        if value is _MISSING or value is None:
            return f"key field {spec.payload_field!r} is missing", None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return f"key field {spec.payload_field!r} is not a string or a number", None
        key = (value if isinstance(value, str) else json.dumps(value)).encode()
        if not key:
            return f"key field {spec.payload_field!r} is empty", None
        if len(key) > MAX_KEY_BYTES:
            return f"key field {spec.payload_field!r} is longer than {MAX_KEY_BYTES} bytes", None
        return None, key
    return None, None


def validate_field_path(path: str) -> None:
    if not isinstance(path, str) or not path or any(not p for p in path.split(".")):
        raise ValueError(f"expected a field path like 'device.id', got {path!r}")
    if path.count(".") >= MAX_FIELD_DEPTH:
        raise ValueError(f"field path {path!r} is deeper than {MAX_FIELD_DEPTH} levels")


def check_key_level(filt: str, level: int) -> None:
    """Raise ValueError unless topics matching `filt` always or possibly have `level`."""
    _, inner = split_shared(filt)
    levels = inner.split("/")
    if levels[-1] == "#":
        return  # any level may exist past '#'; a topic without it is dead-lettered
    if level >= len(levels):
        raise ValueError(f"filter {filt!r} has levels 0..{len(levels) - 1}, not {level}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


class Skip:
    """Router.route's answer for a copy of a message that is recorded through another
    subscription: acknowledge it, record nothing."""

    def __repr__(self) -> str:
        return "SKIP"


SKIP = Skip()


class Router:
    """The ingress routes in configuration order: the first whose filter matches wins.

    Overlapping filters: a broker sends one copy of a message per matching subscription (as
    Mosquitto 2 does; MQTT 5 allows one copy carrying every identifier instead). With MQTT 5 each
    copy says which subscriptions it came through (subscription identifiers, `ids`), and the
    message is recorded once, by the winner's copy (the first declared route that matches the
    topic). A copy that did not come through the winner is skipped only when the winner's
    subscription surely delivers the same message too:

    * the winner was subscribed in the broker's session before this connection (the session
      file says the broker granted it), or a copy through it already arrived in this session
      (brokers deliver a session's messages in order, so whatever was published before the
      subscription existed came first); or
    * every subscription the copy came through is new in this session (known not to be in it
      before this connection), like the winner: the bridge subscribes in declaration order, and
      the winner is declared before every other route matching the topic, so it existed first.

    Otherwise the copy is recorded through its own route: a duplicate at worst (at least once),
    never a loss. Copies without identifiers (MQTT 3.1.1, or subscriptions made before they were
    used) go to the winner. A shared winner ($share/...) never makes a copy skipped: its copy may
    go to another member of the group.

    Used by the network thread only (connection.py feeds the session state, ingress routes)."""

    def __init__(self, routes: Sequence[IngressRoute]) -> None:
        self.routes = tuple(routes)
        self.ids = subscription_ids([r.filter for r in self.routes])
        self._by_id = {self.ids[r.filter]: r for r in self.routes}
        self._established: set[str] = set()
        self._fresh: set[str] = set()

    def route(self, topic: str, ids: Sequence[int] = ()) -> IngressRoute | Skip | None:
        """The route of a message on `topic` that came through the subscriptions `ids`; SKIP
        for a copy recorded through another subscription; None when no route matches."""
        winner = None
        for r in self.routes:
            if r.matches(topic):
                winner = r
                break
        if not ids or winner is None:
            return winner
        through = [self._by_id[i] for i in ids if i in self._by_id]
        for r in through:
            self._established.add(r.filter)
        if winner in through:
            return winner
        if split_shared(winner.filter)[0] is None:
            if winner.filter in self._established:
                return SKIP
            if winner.filter in self._fresh and len(through) == len(ids) \
                    and all(r.filter in self._fresh for r in through):
                return SKIP
        for r in self.routes:  # its own route: the first declared it came through
            if r in through and r.matches(topic):
                return r
        return winner

    # --- session state (connection.py) ------------------------------------------------------------
    def new_session(self, granted_before: set[str], fresh: set[str]) -> None:
        """A connection was accepted. `granted_before`: filters the broker granted in the session
        it resumed (empty for a new session); `fresh`: filters known not to have been in the
        session before this connection (all of them for a new session; none when nothing is
        known about a resumed one)."""
        current = {r.filter for r in self.routes}
        self._established = current & granted_before
        self._fresh = current & fresh - granted_before

    def refused(self, filt: str) -> None:
        """The broker refused the subscription: it delivers nothing through it."""
        self._established.discard(filt)
        self._fresh.discard(filt)

    @property
    def established(self) -> frozenset[str]:
        return frozenset(self._established)


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """The encoded size of a record (edgebus/batch.py encode_record; docs/FORMAT.md)."""
    n = 4 + 8 + 4 + (len(key) if key else 0) + 4 + (len(value) if value else 0) + 2
    for hk, hv in headers:
        n += 2 + len(hk.encode()) + 4 + (len(hv) if hv else 0)
    return n
