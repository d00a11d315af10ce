"""Reading a config file: bounded in size, UTF-8, YAML with no duplicate keys, and integers
written with a leading zero marked (modes); every error one line naming the file and the line.
Shared by every config loader (the supervisor's, the bridges') so that each file obeys one rule.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from edgebus.config_parse import OctalInt
from edgebus.errors import ConfigError

# An operator's file is small; a bound keeps a wrong path (a log file, a device) from being slurped.
MAX_CONFIG_BYTES = 1024 * 1024


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently) and marks
    integers written with a leading zero, so that `socket_mode: 660` is not taken as 0o1224."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        except TypeError:
            pass  # unhashable: construct_mapping reports it
    return loader.construct_mapping(node, deep=True)


def _construct_int(loader: _StrictLoader, node: yaml.ScalarNode) -> int:
    value = loader.construct_yaml_int(node)
    text = str(node.value).replace("_", "").lstrip("+-")
    return OctalInt(value) if re.fullmatch(r"0[0-7]+", text) else value


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def read_yaml_file(path: Path) -> Any:
    """The parsed YAML document in `path`, read with the strict loader (bounded size, UTF-8, no
    duplicate keys, octal-looking integers marked); ConfigError names the file and the line.
    Shared with other config loaders (bridges/mqtt/config.py) so that every file obeys one rule."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes; is this the config file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = e.problem or e.context or "syntax error"
        raise ConfigError(f"{path}: {where}invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as e:  # a control character such as NUL: say where, on one line
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        ch = e.character
        code = ch if isinstance(ch, int) else ord(ch[:1] or "\0")
        raise ConfigError(f"{path}: line {line}, column {column}: invalid YAML: the control "
                          f"character U+{code:04X} is not allowed in YAML text") from None
    except yaml.YAMLError as e:  # every config error is one line (journald, `systemctl status`)
        raise ConfigError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    return data
