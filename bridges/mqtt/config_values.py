"""The value parsers of the MQTT bridge's configuration (bridges/mqtt/config.py), one a kind of
field: the supervisor's rules (sizes, durations, listen addresses, topic names) plus the bridge's
own (MQTT filters, field paths, topic templates, QoS, protocol versions). Each raises ValueError
with a message that does not name the key; config.py adds the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridges.mqtt import filters
from bridges.mqtt import routes as R
from bridges.mqtt import templates as T
from edgebus.config import check_topic_name, describe_value, parse_duration, parse_size
from edgebus.errors import InvalidTopicError
from edgebus.opsconfig import parse_listen


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {describe_value(v)}")
    return v


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"expected an integer, got {describe_value(v)}")
    return int(v)


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a non-empty string, got {describe_value(v)}")
    return v


def _path(v: Any) -> Path:
    return Path(_str(v)).expanduser()


def _topic(v: Any) -> str:
    name = _str(v)
    try:
        check_topic_name(name)
    except InvalidTopicError as e:
        raise ValueError(str(e)) from None
    return name


def _protocol(v: Any) -> str:
    text = str(v).strip().lower().removeprefix("mqttv").removeprefix("v") if v is not None else ""
    if text in ("5", "5.0", "50"):
        return "5"
    if text in ("3.1.1", "311"):
        return "3.1.1"
    raise ValueError(f"expected 5 or '3.1.1', got {describe_value(v)}")


def _qos_in(v: Any) -> int:
    n = _int(v)
    if n == 2:
        raise ValueError("QoS 2 is refused for ingress: paho answers PUBREC before the bridge sees "
                         "the message and keeps it only in memory, so a crash would lose it; use "
                         "1 (no loss, bounded duplicates; the broker downgrades QoS 2 publishes)")
    if n not in (0, 1):
        raise ValueError(f"expected 0 or 1, got {n}")
    return n


def _filter(v: Any) -> str:
    filt = _str(v)
    filters.validate_filter(filt)
    return filt


def _field_path(v: Any) -> str:
    path = _str(v)
    R.validate_field_path(path)
    return path


def _field_list(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise ValueError(f"expected a list of field paths, got {describe_value(v)}")
    return tuple(_field_path(x) for x in v)


def _listen(v: Any) -> str | None:
    return parse_listen(v)


def _size(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"expected a size, got {describe_value(v)}")
    return parse_size(v)


def _duration(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"expected a duration, got {describe_value(v)}")
    return parse_duration(v)


PARSERS: dict[str, Callable[[Any], Any]] = {
    "bool": _bool, "int": _int, "str": _str, "path": _path, "topic": _topic, "size": _size,
    "duration": _duration, "protocol": _protocol, "qos_in": _qos_in, "filter": _filter,
    "field_path": _field_path, "field_list": _field_list, "template": T.TopicTemplate.parse,
    "listen": _listen,
}
