"""Egress topic templates without I/O: the MQTT topic of a record, and its MQTT 5 user properties."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridges.mqtt.filters import validate_topic
from bridges.mqtt.routes import H_USER_PREFIX, MAX_USER_PROPERTIES, Headers

_MISSING = object()


# --- egress --------------------------------------------------------------------------------------


class TemplateError(ValueError):
    """A record cannot be given an MQTT topic (the reason is the message)."""


_FIELD = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class TopicTemplate:
    """An MQTT topic built from a record: literal text with {key}, {topic}, {partition} and
    {header:NAME} (the first header NAME). "{{" and "}}" are literal braces. A substituted value
    must be one non-empty topic level: a key "a/b" or "+" could otherwise aim at other devices."""

    text: str
    parts: tuple[tuple[str, str], ...]  # ("lit", text) | ("key"|"topic"|"partition"|"header", name)

    @classmethod
    def parse(cls, text: str) -> TopicTemplate:
        if not isinstance(text, str) or not text:
            raise ValueError("expected a topic template like 'devices/{key}/command'")
        parts: list[tuple[str, str]] = []
        pos = 0
        literal = []
        while pos < len(text):
            c = text[pos]
            if text.startswith("{{", pos) or text.startswith("}}", pos):
                literal.append(c)
                pos += 2
                continue
            if c == "}":
                raise ValueError(f"unmatched '}}' at position {pos} in {text!r} (write '}}}}')")
            if c == "{":
                m = _FIELD.match(text, pos)
                if m is None:
                    raise ValueError(f"unclosed '{{' at position {pos} in {text!r}")
                name = m.group(1)
                if literal:
                    parts.append(("lit", "".join(literal)))
                    literal = []
                parts.append(_template_field(name, text))
                pos = m.end()
                continue
            literal.append(c)
            pos += 1
        if literal:
            parts.append(("lit", "".join(literal)))
        lits = "".join(v for k, v in parts if k == "lit")
        if any(ch in lits for ch in "+#\x00"):
            raise ValueError(f"template {text!r} contains '+', '#' or NUL: "
                             "a topic to publish to has no wildcards")
        return cls(text, tuple(parts))

    def as_filter(self) -> str:
        """A topic filter matching every topic this template can give: each level holding a
        field becomes '+' (a field's value is one whole level, or part of one)."""
        text = "".join(v if k == "lit" else "\x00" for k, v in self.parts)
        return "/".join("+" if "\x00" in level else level for level in text.split("/"))

    def render(self, topic: str, partition: int, key: bytes | None, headers: Headers) -> str:
        out = []
        for kind, arg in self.parts:
            if kind == "lit":
                out.append(arg)
                continue
            if kind == "topic":
                value = topic
            elif kind == "partition":
                value = str(partition)
            elif kind == "key":
                if key is None:
                    raise TemplateError("the record has no key for {key}")
                value = _text(key, "the key")
            else:
                hv = next((v for k, v in headers if k == arg), _MISSING)
                if hv is _MISSING or hv is None:
                    raise TemplateError(f"the record has no header {arg!r} for {{header:{arg}}}")
                value = _text(hv, f"header {arg!r}")  # type: ignore[arg-type]
            if not value or any(ch in value for ch in "/+#\x00"):
                raise TemplateError(f"{{{kind}}} value {value!r} is not a single topic level")
            out.append(value)
        result = "".join(out)
        try:
            validate_topic(result)
        except ValueError as e:
            raise TemplateError(str(e)) from None
        return result


def _template_field(name: str, text: str) -> tuple[str, str]:
    if name in ("key", "topic", "partition"):
        return (name, "")
    if name.startswith("header:") and len(name) > len("header:"):
        return ("header", name[len("header:"):])
    raise ValueError(f"unknown field {{{name}}} in {text!r} "
                     "(use {key}, {topic}, {partition} or {header:NAME})")


def _text(b: bytes, what: str) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError(f"{what} is not UTF-8 text") from None


def user_properties_from_headers(headers: Headers) -> list[tuple[str, str]]:
    """MQTT 5 user properties for an egress record: every header whose value is UTF-8 text, with
    the ingress prefix "mqtt.user." removed (so a record bridged in and out keeps its names)."""
    props = []
    for k, v in headers:
        if v is None:
            continue
        try:
            text = v.decode("utf-8")
        except UnicodeDecodeError:
            continue
        props.append((k.removeprefix(H_USER_PREFIX), text))
    return props[:MAX_USER_PROPERTIES]
