"""The `nats` target's config keys (`edgebus replicate --check`) and its record <-> message
layout (bridges/replicator/targets/nats_codec.py): no NATS server needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bridges.replicator.config import config_from_mapping
from bridges.replicator.targets import nats_codec as C
from edgebus.errors import ConfigError

from .conftest import secret

pytestmark = pytest.mark.unit


def _good(tmp_path: Path) -> dict:
    pw = secret(tmp_path / "pw", "hub-password-1234")
    return {"node": "gw-7", "links": [{"name": "hub", "target": "nats", "stream": "EDGE",
                                       "servers": ["nats://127.0.0.1:4222", "127.0.0.1:4223"],
                                       "user": "gw7", "password_file": str(pw),
                                       "topics": ["sensors.*"]}]}


def test_a_nats_link_is_read_with_its_defaults(tmp_path: Path) -> None:
    link = config_from_mapping(_good(tmp_path)).links[0]
    assert link.target == "nats" and link.nats is not None
    assert link.nats.servers == ("nats://127.0.0.1:4222", "nats://127.0.0.1:4223")
    assert link.nats.subject_prefix == "edgebus.gw-7" and link.nats.replicas == 3
    assert (link.nats.user, link.nats.password) == ("gw7", "hub-password-1234")
    assert link.address == "nats://127.0.0.1:4222"  # what status shows


@pytest.mark.parametrize("change, message", [
    ({"address": "127.0.0.1:4222"}, r"address: unknown key \(known keys: .*servers"),
    ({"servers": []}, "servers: expected a list"),
    ({"servers": ["http://x:1"]}, r"servers\[0\]: 'http://x:1' is not nats://"),
    ({"servers": ["nats://hub.example:4222"]}, "not on this host, and without tls"),
    ({"stream": "a.b"}, "stream: expected a JetStream stream name"),
    ({"subject_prefix": "edge.*"}, "subject_prefix: expected NATS subject tokens"),
    ({"replicas": 2}, "replicas: expected 1, 3 or 5"),
    ({"token_file": "/nonexistent"}, "give one way to authenticate"),
    ({"password_file": None, "user": "u"}, "password_file"),
    ({"streem": "x"}, "streem: unknown key"),
    # A subject filter brings each subject into a topic of its own, so the pattern must name
    # its wildcards (tests/replication/test_nats_down.py and test_nats_wildcards.py: the rest).
    ({"topics": [{"pattern": "cmd", "direction": "down", "remote": "cmd.>"}]},
     r"topics\[0\].remote: the local topic pattern 'cmd' must name each of the 1 wildcard"),
])
def test_bad_nats_keys_are_named(tmp_path: Path, change: dict, message: str) -> None:
    doc = _good(tmp_path)
    link = {**doc["links"][0], **change}
    if change.get("password_file", "") is None:
        del link["password_file"]
    with pytest.raises(ConfigError, match=message):
        config_from_mapping({**doc, "links": [link]})


def test_tls_urls_allow_a_remote_hub_and_the_check_command_says_so(tmp_path: Path) -> None:
    doc = _good(tmp_path)
    doc["links"][0]["servers"] = ["tls://hub-1.example:4222", "tls://hub-2.example:4222"]
    assert config_from_mapping(doc).links[0].nats.tls_urls  # type: ignore[union-attr]
    cfg = tmp_path / "r.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    out = subprocess.run([sys.executable, "-m", "edgebus.cli.main", "replicate", "--config",
                          str(cfg), "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "hub -> nats" in out.stdout, out.stderr


headers = st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=8)), max_size=4)


@given(offset=st.integers(0, 2**62), ts=st.integers(0, 2**45),
       key=st.none() | st.binary(max_size=12) | st.sampled_from([b"kettle-1", b" x", b""]),
       value=st.none() | st.binary(max_size=40), hdrs=headers | st.just([("unit", b"C")]))
def test_every_record_survives_the_trip_through_nats_headers(offset, ts, key, value, hdrs) -> None:
    payload, h = C.encode("gw.7", "sensors.t", 2, offset, ts, key, value, hdrs)
    assert all("\r" not in v and "\n" not in v and v == v.strip() and v for v in h.values())
    assert h[C.MSG_ID] == f"gw.7/sensors.t/2/{offset}"
    block = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    assert C.decode(C.parse_header_block(block.encode()), payload) == (offset, ts, key, value, hdrs)


def test_plain_keys_and_headers_stay_readable_for_nats_users() -> None:
    _, h = C.encode("gw", "t", 0, 5, 1, b"kettle-1", b"v", [("unit", b"C"), ("room", b"k 2")])
    assert h[C.KEY] == "kettle-1" and h["unit"] == "C" and h["room"] == "k 2"
    assert C.HEADERS not in h and C.KEY_B64 not in h


def test_topics_that_would_make_an_empty_subject_token_are_named() -> None:
    assert C.subject_for("edgebus.gw", "a.b", 3) == "edgebus.gw.a.b.3"
    assert C.subject_problem("a.b") is None
    for bad in (".a", "a.", "a..b"):
        assert "empty NATS subject token" in (C.subject_problem(bad) or "")
