"""The configuration's values and keys: the parsers of each kind of value (sizes, durations,
modes, listen addresses...), the dataclass field that names a setting's kind and bounds, and the
mapping -> dataclass step every section of a config file goes through (edgebus/config.py, the
listener sections in edgebus/config_listeners.py, bridges/mqtt/config.py).

Sizes are integers (bytes) or strings such as "64MiB"; durations are integers (milliseconds) or
strings such as "7d", "12h", "30s", "500ms". Only binary size units are accepted: "MB" could mean
either 10**6 or 2**20 bytes, so it is refused rather than guessed.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import field
from pathlib import Path
from typing import Any

from edgebus.opsconfig import (
    NODE_NAME_RE,
    parse_cleanup_policy,
    parse_disk_policy,
    parse_listen,
    parse_replica_listen,
    parse_threshold,
)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# SASL mechanisms the Kafka listener offers (docs/KAFKA.md).
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4
SECOND, MINUTE, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
I32_MAX, I64_MAX = 2**31 - 1, 2**63 - 1

_SIZE_UNITS = {"b": 1, "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB}
_DURATION_UNITS = {"ms": 1, "s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "w": 7 * DAY}
_NUMBER_UNIT = re.compile(r"\s*(-?\d+)\s*([A-Za-z]*)\s*")


# --- value parsers: each raises ValueError with a message that does not name the key -------------


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _plain_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _number_unit(value: int | str, kind: str, plain: str, example: str, units: dict[str, int],
                 names: str, fold_case: bool) -> int:
    """An integer (in `plain` units) as it is, or a string "<number><unit>" scaled by `units`
    (no unit: plain)."""
    if (n := _plain_int(value)) is not None:
        return n
    m = _NUMBER_UNIT.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected a {kind} ({plain}, or a string like {example!r}), "
                         f"got {describe(value)}")
    number, unit = int(m.group(1)), m.group(2)
    if not unit:
        return number
    key = unit.lower() if fold_case else unit
    if key not in units:
        raise ValueError(f"unknown {kind} unit {unit!r} in {value!r} (use {names})")
    return number * units[key]


def parse_size(value: int | str) -> int:
    """Bytes from an integer or a string like "64MiB", "512 KiB", "4096"."""
    return _number_unit(value, "size", "bytes", "64MiB", _SIZE_UNITS, "B, KiB, MiB, GiB or TiB",
                        fold_case=True)


def parse_duration(value: int | str) -> int:
    """Milliseconds from an integer or a string like "7d", "12h", "30m", "30s", "500ms"."""
    # Case matters: "m" is minutes, and "M" would be a guess.
    return _number_unit(value, "duration", "milliseconds", "30s", _DURATION_UNITS,
                        "ms, s, m, h, d or w", fold_case=False)


class OctalInt(int):
    """An integer written in YAML with a leading zero (0660): the only integers taken as modes."""


def _parse_mode(value: Any) -> int:
    if isinstance(value, str) and re.fullmatch(r"(0o?)?[0-7]{1,4}", value.strip()):
        mode = int(value.strip().removeprefix("0o"), 8)
    elif isinstance(value, OctalInt) or (_plain_int(value) is not None and 0 <= value <= 7):
        mode = int(value)
    elif _plain_int(value) is not None:
        raise ValueError(f"write the mode in octal with a leading zero (like 0660), got {value}")
    else:
        raise ValueError(f"expected an octal file mode like 0660, got {describe(value)}")
    if mode > 0o777:
        raise ValueError(f"expected a file mode of at most 0777, got {oct(mode)}")
    return mode


def parse_level(value: Any) -> str:
    if isinstance(value, str) and value.strip().upper() in LOG_LEVELS:
        return value.strip().upper()
    raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}, got {describe(value)}")


def _parse_int(value: Any) -> int:
    if (n := _plain_int(value)) is None:
        raise ValueError(f"expected integer, got {describe(value)}")
    return n


def _parse_path(value: Any) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a path, got {describe(value)}")
    return Path(value).expanduser()


def _parse_optional_path(value: Any) -> Path | None:
    return None if value is None else _parse_path(value)


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"expected true or false, got {describe(value)}")


def parse_kafka_listeners(value: Any) -> tuple[str, ...]:
    """One host:port or a list of them (any address: the kafka section refuses a non-loopback
    one without TLS or SASL)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        listen = parse_replica_listen(v)
        if listen is None:
            raise ValueError(f"expected host:port such as '127.0.0.1:9092', got {describe(v)}")
        out.append(listen)
    return tuple(out)


def _parse_sasl_mechanisms(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    out = []
    for v in items:
        if not isinstance(v, str) or v.strip().upper() not in SASL_MECHANISMS:
            raise ValueError(f"expected a list of {', '.join(SASL_MECHANISMS)}, got {describe(v)}")
        out.append(v.strip().upper())
    return tuple(out)


def _parse_optional_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ValueError(f"expected a string, got {describe(value)}")


def _parse_node(value: Any) -> str:
    if isinstance(value, str) and (value == "" or NODE_NAME_RE.fullmatch(value)):
        return value
    raise ValueError(f"expected a node name of 1-64 letters, digits, '.', '_' or '-', got {describe(value)}")


PARSERS = {
    "int": _parse_int, "size": parse_size, "duration": parse_duration,
    "path": _parse_path, "level": parse_level, "mode": _parse_mode,
    "threshold": lambda v: parse_threshold(v, parse_size), "listen": parse_listen,
    "disk_policy": parse_disk_policy, "replica_listen": parse_replica_listen,
    "optional_path": _parse_optional_path, "node": _parse_node, "bool": _parse_bool,
    "cleanup_policy": parse_cleanup_policy, "kafka_listeners": parse_kafka_listeners,
    "sasl_mechanisms": _parse_sasl_mechanisms, "optional_str": _parse_optional_str,
}


def setting(default: Any, kind: str, lo: int | None = None, hi: int | None = None,
            unlimited: bool = False) -> Any:
    """A dataclass field with its kind and bounds; `unlimited` also admits -1 ("no limit")."""
    meta = {"kind": kind, "lo": lo, "hi": hi, "unlimited": unlimited}
    return field(default=default, metadata=meta)


def check_bounds(f: dataclasses.Field[Any], n: int) -> None:
    lo, hi, unlimited = f.metadata["lo"], f.metadata["hi"], f.metadata["unlimited"]
    if unlimited and n == -1:
        return
    no_limit = " (or -1 for no limit)" if unlimited else ""
    if lo is not None and n < lo:
        raise ValueError(f"must be at least {lo}{no_limit}, got {n}")
    if hi is not None and n > hi:
        raise ValueError(f"must be at most {hi}, got {n}")


def resolve(p: Path, base_dir: Path | None) -> Path:
    """A path from a config file: a relative one is taken from the file's directory."""
    return base_dir / p if base_dir is not None and not p.is_absolute() else p


# --- mapping -> dataclasses ----------------------------------------------------------------------


class InvalidKey(Exception):
    """A config key and what is wrong with its value; loaders turn it into one ConfigError line
    (shared with other config loaders, bridges/mqtt/config.py, so both files word it alike)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key, self.message = key, message


def join_key(prefix: str, key: str) -> str:
    """The dotted name of `key` inside the section `prefix` ("" at the top level)."""
    return f"{prefix}.{key}" if prefix else key


def as_mapping(value: Any, where: str) -> dict[str, Any]:
    """`value` as a mapping with string keys (None: empty), else InvalidKey naming `where`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidKey(where or "(top level)", f"expected a mapping, got {describe(value)}")
    for k in value:
        if not isinstance(k, str):
            raise InvalidKey(where or "(top level)", f"keys must be strings, got {describe(k)}")
    return value


def unknown_key(key: str, where: str, allowed: list[str]) -> InvalidKey:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(allowed)})"
    return InvalidKey(join_key(where, key), f"unknown key{hint}")


def build(cls: type, data: dict[str, Any], where: str, base: Any = None,
          extra: tuple[str, ...] = ()) -> Any:
    """An instance of the settings dataclass `cls` from `data`, starting from `base`."""
    fields = {f.name: f for f in dataclasses.fields(cls) if "kind" in f.metadata}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in extra:
            continue
        if key not in fields:
            raise unknown_key(key, where, [*extra, *fields])
        f = fields[key]
        try:
            value = PARSERS[f.metadata["kind"]](raw)
            if isinstance(value, int):
                check_bounds(f, value)
        except ValueError as e:
            raise InvalidKey(join_key(where, key), str(e)) from None
        values[key] = value
    return dataclasses.replace(base, **values) if base is not None else cls(**values)
