"""The two name -> secret files (replica.tokens_file, http.users_file) read through one
secretfiles.read_secret_map: what each accepts and the error naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgebus.config import MIN_TOKEN_CHARS, load_replica_tokens
from edgebus.errors import ConfigError
from edgebus.server.http.auth import load_users

SECRET = "s" * MIN_TOKEN_CHARS


def secret_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp_path / "secrets.yaml"
    p.write_text(text)
    p.chmod(mode)
    return p


def test_both_read_a_private_mapping(tmp_path: Path) -> None:
    p = secret_file(tmp_path, f"gw-1: {SECRET}\nkitchen: {SECRET}\n")
    assert load_replica_tokens(p) == load_users(p) == {"gw-1": SECRET, "kitchen": SECRET}
    assert load_replica_tokens(None) == load_users(None) == {}


@pytest.mark.parametrize("load, setting", [(load_replica_tokens, "replica.tokens_file"),
                                           (load_users, "http.users_file")])
def test_a_file_others_can_read_is_refused(tmp_path: Path, load, setting) -> None:
    with pytest.raises(ConfigError, match=rf"{setting}: .* readable by its group or others"):
        load(secret_file(tmp_path, f"a: {SECRET}\n", mode=0o640))


@pytest.mark.parametrize("text, load, message", [
    (f"'bad name': {SECRET}\n", load_replica_tokens, "'bad name' is not a node name$"),
    ("gw-1: short\n", load_replica_tokens,
     f"the token of gw-1 must be a string of at least {MIN_TOKEN_CHARS} characters"),
    ("[a, b]\n", load_replica_tokens, "expected a mapping of node name -> token"),
    (f"'a:b': {SECRET}\n", load_users, r"'a:b' is not a user name \(1-64 characters, no ':'\)"),
    (f"{'u' * 65}: {SECRET}\n", load_users, "is not a user name"),
    ("kitchen: 12\n", load_users,
     f"the secret of kitchen must be a string of at least {MIN_TOKEN_CHARS} characters"),
    ("{}\n", load_users, "expected a mapping of user name -> secret"),
])
def test_bad_entries_are_named(tmp_path: Path, text: str, load, message: str) -> None:
    p = secret_file(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as e:
        load(p)
    assert str(e.value).startswith(f"{p}: ")


def test_an_empty_tokens_file_names_no_peer(tmp_path: Path) -> None:
    assert load_replica_tokens(secret_file(tmp_path, "{}\n")) == {}
