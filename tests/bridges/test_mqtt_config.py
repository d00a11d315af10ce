"""The bridge's config file: defaults, and every error naming its key (bridges/mqtt/config.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bridges.mqtt.config import BridgeConfig, config_from_mapping, load_config
from edgebus.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
MIN = {"ingress": [{"filter": "sensors/+/t", "topic": "sensors.t"}]}


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_mapping(data, source="/etc/bridge.yaml")
    return str(info.value)


def test_defaults() -> None:
    c = config_from_mapping(MIN)
    assert c.mqtt.protocol == "5" and c.mqtt.port == 1883
    assert c.edgebus.acks == "durable"  # PUBACK means: on disk, fsynced
    assert c.mqtt.receive_maximum == 64
    route = c.ingress_routes()[0]
    assert route.qos == 1 and route.dead_letter_topic == "mqtt.dead-letter"
    assert route.key.topic_level is None and route.key.payload_field is None


def test_full_example_file_loads() -> None:
    c = load_config(REPO / "bridges" / "mqtt" / "example.yaml")
    assert isinstance(c, BridgeConfig)
    assert c.ingress and c.egress


def test_teapot_config_loads() -> None:
    c = load_config(REPO / "examples" / "teapot" / "bridge.yaml")
    assert [r.topic for r in c.ingress] == ["teapot.temperature"]
    assert c.egress[0].mqtt_topic.text == "kitchen/teapot/{key}/command"


def test_sizes_durations_and_protocol_spellings() -> None:
    c = config_from_mapping({**MIN, "mqtt": {"keepalive_ms": "1m", "protocol": "3.1.1"},
                             "edgebus": {"max_batch_bytes": "128KiB"}})
    assert c.mqtt.keepalive_ms == 60_000 and c.mqtt.protocol == "3.1.1"
    assert c.edgebus.max_batch_bytes == 128 * 1024
    assert config_from_mapping({**MIN, "mqtt": {"protocol": 5}}).mqtt.protocol == "5"


def test_relative_paths_are_taken_from_the_config_file(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("mqtt:\n  tls:\n    ca_file: ca.pem\nstatus:\n  file: st.json\n"
                 "ingress:\n  - {filter: a/#, topic: a}\n")
    c = load_config(f)
    assert c.mqtt.tls is not None and c.mqtt.tls.ca_file == tmp_path / "ca.pem"
    assert c.status_file == tmp_path / "st.json"


@pytest.mark.parametrize(("data", "message"), [
    ({**MIN, "mqqt": {}}, "mqqt: unknown key (did you mean 'mqtt'?)"),
    ({**MIN, "mqtt": {"prot": 5}}, "mqtt.prot: unknown key (did you mean 'port'?)"),
    ({**MIN, "mqtt": {"port": "1883"}}, "mqtt.port: expected an integer, got '1883'"),
    ({**MIN, "mqtt": {"port": 0}}, "mqtt.port: must be at least 1"),
    ({**MIN, "mqtt": {"port": True}}, "mqtt.port: expected an integer, got true"),
    ({**MIN, "mqtt": {"protocol": "4"}}, "mqtt.protocol: expected 5 or '3.1.1'"),
    ({**MIN, "mqtt": {"keepalive_ms": "5 parsecs"}}, "mqtt.keepalive_ms: unknown duration unit"),
    ({**MIN, "mqtt": {"receive_maximum": 0}}, "mqtt.receive_maximum: must be at least 1"),
    ({**MIN, "mqtt": {"password": "x"}}, "mqtt.username: a password needs a username"),
    ({**MIN, "mqtt": {"username": "u", "password": "x", "password_file": "/p"}},
     "mqtt.password_file: give either"),
    ({**MIN, "mqtt": {"tls": {"cert_file": "c.pem"}}}, "mqtt.tls.key_file:"),
    ({**MIN, "mqtt": {"tls": {"insecure": "yes"}}}, "mqtt.tls.insecure: expected true or false"),
    ({**MIN, "mqtt": {"reconnect_min_ms": "1m", "reconnect_max_ms": "1s"}},
     "mqtt.reconnect_min_ms: must not exceed"),
    ({**MIN, "edgebus": {"acks": "none"}}, "edgebus.acks: expected one of written, durable"),
    ({**MIN, "edgebus": {"max_batch_bytes": "10MiB"}}, "edgebus.max_batch_bytes: must be at most"),
    ({"ingress": []}, "(top level): no routes"),
    ({}, "(top level): no routes"),
    ({"ingress": {"filter": "a"}}, "ingress: expected a list of routes"),
    ({"ingress": [{"topic": "t"}]}, "ingress[0]: missing required key 'filter'"),
    ({"ingress": [{"filter": "a/#"}]}, "ingress[0]: missing required key 'topic'"),
    ({"ingress": [{"filter": "a/#/b", "topic": "t"}]}, "ingress[0].filter: 'a/#/b': '#' must be"),
    ({"ingress": [{"filter": "a/#", "topic": "bad/name"}]}, "ingress[0].topic: topic name"),
    ({"ingress": [{"filter": "a/#", "topic": "t", "qos": 2}]},
     "ingress[0].qos: QoS 2 is refused for ingress: paho answers PUBREC"),
    ({"ingress": [{"filter": "a/+", "topic": "t", "key": {"topic_level": 2}}]},
     "ingress[0].key.topic_level: filter 'a/+' has levels 0..1, not 2"),
    ({"ingress": [{"filter": "a/+", "topic": "t", "key": {"topic_level": 1,
                                                          "payload_field": "id"}}]},
     "ingress[0].key: give either topic_level or payload_field"),
    ({"ingress": [{"filter": "a/+", "topic": "t", "key": {"payload_field": "a..b"}}]},
     "ingress[0].key.payload_field: expected a field path"),
    ({"ingress": [{"filter": "a/+", "topic": "t", "key": {"level": 1}}]},
     "ingress[0].key.level: unknown key"),
    ({"ingress": [{"filter": "a/+", "topic": "t", "validate": {"json": "yes"}}]},
     "ingress[0].validate.json: expected true or false"),
    ({"ingress": [{"filter": "a/+", "topic": "t", "validate": {"required_fields": "a"}}]},
     "ingress[0].validate.required_fields: expected a list"),
    ({"ingress": [{"filter": "a/+", "topic": "t", "validate": {"max_bytes": "300KiB"}}]},
     "ingress[0].validate.max_bytes:"),
    ({"ingress": [{"filter": "a/+", "topic": "t"}, {"filter": "a/+", "topic": "u"}]},
     "ingress[1].filter: filter 'a/+' is routed twice (also ingress[0])"),
    ({"ingress": [{"filter": "$share/g/a/+", "topic": "t"}], "mqtt": {"protocol": "3.1.1"}},
     "mqtt.protocol: shared subscriptions"),
    ({"egress": [{"topic": "cmds"}]}, "egress[0]: missing required key 'mqtt_topic'"),
    ({"egress": [{"topic": "cmds", "mqtt_topic": "a/{device}"}]},
     "egress[0].mqtt_topic: unknown field {device}"),
    ({"egress": [{"topic": "cmds", "mqtt_topic": "a/+"}]}, "egress[0].mqtt_topic: template"),
    ({"egress": [{"topic": "cmds", "mqtt_topic": "a", "qos": 3}]},
     "egress[0].qos: must be at most 2"),
    ({"egress": [{"topic": "cmds", "mqtt_topic": "a", "auto_offset_reset": "none"}]},
     "egress[0].auto_offset_reset: expected one of earliest, latest"),
    ({**MIN, "log_level": "LOUD"}, "log_level: expected one of DEBUG"),
    ({**MIN, "dead_letter": {"topic": "__internal"}}, "dead_letter.topic: topic name"),
    ([1, 2], "(top level): expected a mapping, got a list"),
])
def test_errors_name_the_file_and_the_key(data: Any, message: str) -> None:
    err = error_of(data)
    assert err.startswith("/etc/bridge.yaml: "), err
    assert message in err, err


def test_yaml_problems_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "b.yaml"
    f.write_text("ingress:\n  - filter: a/#\n    topic: a\n    topic: b\n")
    with pytest.raises(ConfigError, match=r"line 4.*duplicate key 'topic'"):
        load_config(f)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")


def test_cli_check_and_status_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgebus.cli.main import main

    assert main(["bridge", "mqtt", "--config", str(REPO / "bridges/mqtt/example.yaml"),
                 "--check"]) == 0
    assert "valid (3 ingress, 1 egress route(s))" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingress: [{filter: a/#, topic: t, qos: 2}]\n")
    assert main(["bridge", "mqtt", "--config", str(bad), "--check"]) == 78  # EX_CONFIG
    assert "ingress[0].qos: QoS 2 is refused" in capsys.readouterr().err
    assert main(["bridge", "status", "--status-file", str(tmp_path / "none.json")]) == 1
    assert "no status file" in capsys.readouterr().err


def test_status_says_when_the_last_error_was(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(User trial: `edgebus bridge status` showed an error the bridge had long recovered from as
    if it were the present state.)"""
    import json
    import time

    from edgebus.cli.main import main

    f = tmp_path / "status.json"
    f.write_text(json.dumps({"state": "running", "written_at": time.time(), "interval_ms": 1000,
                             "client_id": "b", "counters": {}, "gauges": {},
                             "last_error": "egress t: cannot connect",
                             "last_error_at": time.time() - 600}))
    assert main(["bridge", "status", "--status-file", str(f)]) == 0
    out = capsys.readouterr().out
    assert "last error (at " in out and " UTC, 10 min ago): egress t: cannot connect" in out, out
