"""The `acl:` section of the supervisor's config, and the rules file it may name.

    acl:
      enabled: true           # false: no access control at all (every client may do everything)
      default: owner          # owner | allow | deny (policy.py)
      rules:                  # one rule per item (rules.py)
        - allow user:mqtt-bridge write topic:sensors.*
      principals:             # identity pattern -> principal(s) (principals.py)
        "sasl:*": "user:%u"
      file: acl.yaml          # more rules and principals; `edgebus acl add|remove` edit this file

The file has the same two keys (`rules:`, `principals:`). A file that does not exist yet holds no
rules (the first `edgebus acl add` creates it); one that another user may write is refused, as its
rules are the keys to every topic.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgebus.acl.policy import DEFAULTS, Policy
from edgebus.acl.principals import PrincipalMap
from edgebus.acl.rules import MAX_RULES, AclSyntaxError, Rule, parse_rule

KEYS = ("enabled", "default", "rules", "principals", "file")
FILE_HEADER = ("# edgebus access rules (docs/SECURITY.md). `edgebus acl add|remove` rewrite this "
               "file;\n# the supervisor reads it at start and on SIGHUP (`systemctl reload "
               "edgebus`).\n")


@dataclass(frozen=True)
class AclSettings:
    default: str = "owner"
    rules: tuple[Rule, ...] = ()  # from the config file itself
    principals: PrincipalMap = field(default_factory=PrincipalMap)
    file: Path | None = None
    file_rules: tuple[Rule, ...] = ()  # from `file`, as read when the config was loaded
    file_principals: PrincipalMap = field(default_factory=PrincipalMap)
    enabled: bool = True

    def policy(self) -> Policy:
        mapping = PrincipalMap(self.principals.entries + self.file_principals.entries)
        return Policy(self.rules + self.file_rules, self.default, mapping)


class AclKeyError(Exception):
    """A key of the `acl:` section and what is wrong (config.py words it like its own errors)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(key, message)
        self.key, self.message = key, message


def parse_rules(items: Any, where: str) -> tuple[Rule, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        raise AclKeyError(where, "expected a list of rules like 'allow user:alice read topic:x'")
    if len(items) > MAX_RULES:
        raise AclKeyError(where, f"more than {MAX_RULES} rules")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise AclKeyError(f"{where}[{i}]", "expected a rule written as one string")
        try:
            out.append(parse_rule(item))
        except AclSyntaxError as e:
            raise AclKeyError(f"{where}[{i}]", str(e)) from None
    return tuple(out)


def parse_section(data: Any, base_dir: Path | None,
                  read_yaml: Any) -> AclSettings:
    """AclSettings from the section's mapping; `read_yaml(path)` parses a YAML file (the
    config's strict reader). AclKeyError names the key."""
    if data is None:
        return AclSettings()
    if not isinstance(data, dict):
        raise AclKeyError("acl", "expected a mapping (default, rules, principals, file)")
    for k in data:
        if k not in KEYS:
            raise AclKeyError(f"acl.{k}", f"unknown key (known keys: {', '.join(KEYS)})")
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise AclKeyError("acl.enabled", f"expected true or false, got {enabled!r}")
    default = data.get("default", "owner")
    if default not in DEFAULTS:
        raise AclKeyError("acl.default", f"expected one of {', '.join(DEFAULTS)}, got {default!r}")
    rules = parse_rules(data.get("rules"), "acl.rules")
    try:
        principals = PrincipalMap.parse(data.get("principals"))
    except AclSyntaxError as e:
        raise AclKeyError("acl.principals", str(e)) from None
    path = None
    file_rules: tuple[Rule, ...] = ()
    file_principals = PrincipalMap()
    if data.get("file") is not None:
        if not isinstance(data["file"], str) or not data["file"].strip():
            raise AclKeyError("acl.file", "expected a path")
        path = Path(data["file"]).expanduser()
        if base_dir is not None and not path.is_absolute():
            path = base_dir / path
        file_rules, file_principals = read_rules_file(path, read_yaml)
    return AclSettings(default, rules, principals, path, file_rules, file_principals, enabled)


def read_rules_file(path: Path, read_yaml: Any) -> tuple[tuple[Rule, ...], PrincipalMap]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (), PrincipalMap()  # `edgebus acl add` creates it
    except OSError as e:
        raise AclKeyError("acl.file", f"cannot read {path}: {e.strerror}") from None
    if st.st_mode & 0o022:
        raise AclKeyError("acl.file", f"{path} may be written by its group or others (mode "
                                      f"{st.st_mode & 0o777:04o}): chmod go-w it")
    doc = read_yaml(path)
    if doc is None:
        return (), PrincipalMap()
    if not isinstance(doc, dict) or set(doc) - {"rules", "principals"}:
        raise AclKeyError("acl.file", f"{path}: expected a mapping with rules: and principals:")
    rules = parse_rules(doc.get("rules"), f"{path}: rules")
    try:
        mapping = PrincipalMap.parse(doc.get("principals"))
    except AclSyntaxError as e:
        raise AclKeyError("acl.file", f"{path}: principals: {e}") from None
    return rules, mapping


def write_rules_file(path: Path, rules: tuple[Rule, ...], principals: PrincipalMap) -> None:
    """Replace the file atomically (a reload never reads half a file), mode 0644."""
    import tempfile  # only here: the supervisor loads this module, and rarely writes the file

    import yaml

    doc: dict[str, Any] = {"rules": [r.text() for r in rules]}
    if principals.entries:
        doc["principals"] = {p: list(t) if len(t) > 1 else t[0] for p, t in principals.entries}
    text = FILE_HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
