"""Topic filters, key extraction, validation (routes.py) and egress templates (templates.py),
without a broker."""

from __future__ import annotations

import json
import re

import pytest

from bridges.mqtt import filters
from bridges.mqtt import routes as R
from bridges.mqtt import templates as T

pytestmark = pytest.mark.unit


# --- topic filters -------------------------------------------------------------------------------

MATCHES = [
    # (filter, topic, matches)
    ("sensors/+/temperature", "sensors/d1/temperature", True),
    ("sensors/+/temperature", "sensors/d1/humidity", False),
    ("sensors/+/temperature", "sensors/temperature", False),
    ("sensors/+/temperature", "sensors/a/b/temperature", False),
    ("sensors/+/temperature", "sensors//temperature", True),  # '+' matches an empty level
    ("sensors/#", "sensors", True),  # '#' includes the parent level
    ("sensors/#", "sensors/", True),
    ("sensors/#", "sensors/a/b/c", True),
    ("sensors/#", "sensorsX/a", False),
    ("#", "a/b", True),
    ("#", "/a", True),
    ("+", "a", True),
    ("+", "a/b", False),
    ("+/+", "/a", True),
    ("/+", "/a", True),
    ("a/b", "a/b", True),
    ("a/b", "a/b/", False),
    ("A/b", "a/b", False),  # case-sensitive
    # Wildcards at the first level do not match topics starting with '$' (MQTT 4.7.2).
    ("#", "$SYS/broker/uptime", False),
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    # A shared subscription matches like its inner filter.
    ("$share/g1/sensors/+/t", "sensors/x/t", True),
    ("$share/g1/sensors/+/t", "sensors/x/u", False),
]


@pytest.mark.parametrize(("filt", "topic", "expected"), MATCHES)
def test_filter_matching(filt: str, topic: str, expected: bool) -> None:
    assert filters.filter_matches(filt, topic) is expected


@pytest.mark.parametrize("filt", [
    "a/#", "#", "+", "a/+/b", "+/+/#", "$share/g/a/+", "/", "a//b",
])
def test_valid_filters(filt: str) -> None:
    filters.validate_filter(filt)


@pytest.mark.parametrize(("filt", "message"), [
    ("", "non-empty"),
    ("a/#/b", "'#' must be a whole level and the last one"),
    ("a/b#", "'#' must be a whole level"),
    ("a/b+/c", "'+' must be a whole level"),
    ("a+", "'+' must be a whole level"),
    ("a/\x00", "NUL"),
    ("$share//a", "bad share name"),
    ("$share/g", "needs a filter"),
    ("$share/g+/a", "bad share name"),
])
def test_invalid_filters(filt: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        filters.validate_filter(filt)


def test_router_takes_the_first_matching_route_in_order() -> None:
    a = R.IngressRoute("sensors/special/temperature", "special", "dlq")
    b = R.IngressRoute("sensors/+/temperature", "temps", "dlq")
    c = R.IngressRoute("sensors/#", "everything", "dlq")
    router = R.Router([a, b, c])
    assert router.route("sensors/special/temperature") is a
    assert router.route("sensors/x/temperature") is b
    assert router.route("sensors/x/humidity") is c
    assert router.route("other/x") is None


# --- key extraction ------------------------------------------------------------------------------


def test_key_from_a_topic_level() -> None:
    spec = R.KeySpec(topic_level=1)
    assert R.extract_key(spec, "sensors/dev-7/temperature", None) == (None, b"dev-7")
    reason, key = R.extract_key(spec, "sensors", None)
    assert key is None and "no level 1" in reason
    reason, key = R.extract_key(spec, "sensors//t", None)
    assert key is None and "empty" in reason


@pytest.mark.parametrize(("doc", "expected"), [
    ({"device": {"id": "pot-1"}}, b"pot-1"),
    ({"device": {"id": 42}}, b"42"),
    ({"device": {"id": 1.5}}, b"1.5"),
])
def test_key_from_a_payload_field(doc: object, expected: bytes) -> None:
    assert R.extract_key(R.KeySpec(payload_field="device.id"), "t", doc) == (None, expected)


@pytest.mark.parametrize(("doc", "reason"), [
    ({"device": {}}, "missing"),
    ({"device": {"id": None}}, "missing"),
    ({"device": "pot-1"}, "missing"),
    ([1, 2], "missing"),
    ({"device": {"id": True}}, "not a string or a number"),
    ({"device": {"id": {"a": 1}}}, "not a string or a number"),
    ({"device": {"id": ""}}, "empty"),
    ({"device": {"id": "x" * 2000}}, "longer than"),
])
def test_key_field_problems_are_reasons(doc: object, reason: str) -> None:
    why, key = R.extract_key(R.KeySpec(payload_field="device.id"), "t", doc)
    assert key is None and reason in why


def test_no_key() -> None:
    assert R.extract_key(R.KeySpec(), "a/b", None) == (None, None)


def test_check_key_level_against_the_filter() -> None:
    R.check_key_level("sensors/+/t", 2)
    R.check_key_level("sensors/#", 7)  # beyond '#': checked per message
    with pytest.raises(ValueError, match=r"levels 0\.\.2"):
        R.check_key_level("sensors/+/t", 3)


# --- processing one message ----------------------------------------------------------------------


def route(**kw: object) -> R.IngressRoute:
    base = {"filter": "sensors/+/temperature", "topic": "temps", "dead_letter_topic": "dlq",
            "key": R.KeySpec(topic_level=1)}
    base.update(kw)
    return R.IngressRoute(**base)  # type: ignore[arg-type]


def test_accepted_record_has_key_value_and_mqtt_headers() -> None:
    out = route().process("sensors/d1/temperature", b'{"t": 21.5}', 1, retain=True, dup=False,
                          user_properties=[("unit", "C"), ("unit", "K")],
                          content_type="application/json")
    assert isinstance(out, R.Accepted)
    assert (out.topic, out.key, out.value) == ("temps", b"d1", b'{"t": 21.5}')
    assert out.headers == [
        ("mqtt.topic", b"sensors/d1/temperature"), ("mqtt.qos", b"1"), ("mqtt.retain", b"1"),
        ("mqtt.dup", b"0"), ("mqtt.content_type", b"application/json"),
        ("mqtt.user.unit", b"C"), ("mqtt.user.unit", b"K"),
    ]


@pytest.mark.parametrize(("payload", "validate", "reason"), [
    (b"not json", R.Validation(json=True), "not valid JSON"),
    (b"\xff\xfe", R.Validation(json=True), "not valid JSON"),
    (b'{"a": 1}', R.Validation(required_fields=("t",)), "required field 't' is missing"),
    (b'{"t": {"x": 1}}', R.Validation(required_fields=("t.y",)), "'t.y' is missing"),
    (b"x" * 101, R.Validation(max_bytes=100), "101 bytes exceeds max_bytes=100"),
])
def test_invalid_payloads_are_dead_lettered_with_a_reason(
        payload: bytes, validate: R.Validation, reason: str) -> None:
    out = route(validate=validate).process("sensors/d1/temperature", payload, 1, False, False)
    assert isinstance(out, R.Rejected)
    assert out.dead_letter_topic == "dlq"
    h = dict(out.headers)
    assert reason in h[R.H_DLQ_REASON].decode()
    assert h[R.H_DLQ_ROUTE] == b"sensors/+/temperature"
    assert h[R.H_TOPIC] == b"sensors/d1/temperature"
    assert out.value == payload  # kept whole (within max_dead_letter_payload)


def test_dead_letter_payload_is_truncated_and_says_so() -> None:
    r = route(validate=R.Validation(max_bytes=10), max_dead_letter_payload=4)
    out = r.process("sensors/d1/temperature", b"0123456789ABC", 1, False, False)
    assert isinstance(out, R.Rejected)
    assert out.value == b"0123"
    assert dict(out.headers)[R.H_DLQ_TRUNCATED] == b"13"


def test_a_record_too_large_for_a_batch_is_dead_lettered() -> None:
    r = route(max_record_bytes=300)
    out = r.process("sensors/d1/temperature", b"x" * 200, 1, False, False,
                    user_properties=[("p", "v" * 100)])
    assert isinstance(out, R.Rejected)
    assert "exceeds the batch limit" in dict(out.headers)[R.H_DLQ_REASON].decode()
    # The dead letter itself would not fit with the user properties: they are left out.
    assert not any(k.startswith(R.H_USER_PREFIX) for k, _ in out.headers)


def test_too_many_user_properties() -> None:
    props = [("p", "v")] * (R.MAX_USER_PROPERTIES + 1)
    out = route().process("sensors/d1/temperature", b"{}", 1, False, False, props)
    assert isinstance(out, R.Rejected)


def test_key_problem_is_a_dead_letter_reason() -> None:
    r = route(filter="sensors/#", key=R.KeySpec(payload_field="id"))
    out = r.process("sensors/a", json.dumps({"other": 1}).encode(), 1, False, False)
    assert isinstance(out, R.Rejected)
    assert b"key field 'id' is missing" in dict(out.headers)[R.H_DLQ_REASON]


def test_record_size_matches_the_encoder() -> None:
    from edgebus.batch import encode_record  # the layout routes.record_size mirrors

    for key, value, headers in [(None, b"", []), (b"k", b"v" * 100, [("a", b"1"), ("bb", None)]),
                                (b"", None, [("x" * 300, b"y" * 70000)])]:
        assert R.record_size(key, value, headers) == len(encode_record(0, key, value, headers))


# --- egress templates ----------------------------------------------------------------------------


def test_template_rendering() -> None:
    t = T.TopicTemplate.parse("kitchen/teapot/{key}/command")
    assert t.render("cmds", 0, b"pot-1", []) == "kitchen/teapot/pot-1/command"
    t = T.TopicTemplate.parse("{topic}/{partition}/{header:room}/{{literal}}")
    assert t.render("cmds", 3, None, [("room", b"hall"), ("room", b"x")]) == \
        "cmds/3/hall/{literal}"


@pytest.mark.parametrize(("key", "reason"), [
    (None, "no key"),
    (b"a/b", "not a single topic level"),
    (b"+", "not a single topic level"),
    (b"#", "not a single topic level"),
    (b"", "not a single topic level"),
    (b"\xff", "not UTF-8"),
])
def test_template_refuses_keys_that_are_not_one_level(key: bytes | None, reason: str) -> None:
    t = T.TopicTemplate.parse("devices/{key}/command")
    with pytest.raises(T.TemplateError, match=reason):
        t.render("cmds", 0, key, [])


def test_template_missing_header() -> None:
    t = T.TopicTemplate.parse("devices/{header:device}/command")
    with pytest.raises(T.TemplateError, match="no header 'device'"):
        t.render("cmds", 0, None, [("other", b"x")])


@pytest.mark.parametrize(("text", "message"), [
    ("", "expected a topic template"),
    ("a/{nope}", "unknown field"),
    ("a/{key", "unclosed"),
    ("a/}", "unmatched"),
    ("a/+/{key}", "wildcards"),
    ("a/#", "wildcards"),
    ("a/{header:}", "unknown field"),
])
def test_bad_templates(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        T.TopicTemplate.parse(text)


def test_headers_become_user_properties() -> None:
    props = T.user_properties_from_headers(
        [("reason", b"boiling"), ("mqtt.user.unit", b"C"), ("bin", b"\xff"), ("none", None)])
    assert props == [("reason", "boiling"), ("unit", "C")]
