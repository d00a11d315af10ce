"""Files named in config files, and the secrets some of them hold: one way to find them and one
set of rules for reading them (the supervisor's replica.tokens_file and http.users_file, the
replicator's token, password and credentials files).

A secret file that its group or others can read is refused, as ssh refuses such a key: the
edgebus group holds every local client, so not them either.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgebus.errors import ConfigError


def config_path(text: str, base: Path | None) -> Path:
    """A path written in a config file: $VARIABLES and ~ expanded, a relative one taken from
    `base` (the config file's directory). $CREDENTIALS_DIRECTORY is where systemd's
    LoadCredential= hands a (DynamicUser) service its secrets."""
    p = Path(os.path.expandvars(text)).expanduser()
    return base / p if not p.is_absolute() and base is not None else p


def check_private(path: Path, where: str) -> None:
    """ConfigError (naming `where`, the setting) unless `path` is there and only its owner may
    read it."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None
    if mode & 0o077:
        raise ConfigError(f"{where}: {path} is readable by its group or others "
                          f"(mode {mode & 0o777:04o}); chmod 0600 it")


def read_secret(path: Path, where: str) -> str:
    """The secret in `path` (surrounding white space removed), checked as check_private does;
    an empty file is a ConfigError too."""
    check_private(path, where)
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {e.strerror}") from None
    if not text:
        raise ConfigError(f"{where}: {path} is empty")
    return text
