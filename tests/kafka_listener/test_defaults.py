"""The Kafka listener's built-in default is 127.0.0.1:9092 (the quickstart serves Kafka clients out
of the box); the tests' EDGEBUS_KAFKA_LISTENERS only moves it, and a config file's
kafka.listeners wins over both."""

from __future__ import annotations

import pytest

from edgebus.config import config_from_mapping

pytestmark = pytest.mark.unit


def test_the_default_listener_is_loopback_9092(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEBUS_KAFKA_LISTENERS", raising=False)
    cfg = config_from_mapping({})
    assert cfg.kafka.enabled and cfg.kafka.listeners == ("127.0.0.1:9092",)
    monkeypatch.setenv("EDGEBUS_KAFKA_LISTENERS", "127.0.0.1:0")
    assert config_from_mapping({}).kafka.listeners == ("127.0.0.1:0",)
    given = config_from_mapping({"kafka": {"listeners": ["127.0.0.1:19092"]}})
    assert given.kafka.listeners == ("127.0.0.1:19092",)
    assert config_from_mapping({"kafka": {"enabled": False}}).kafka.enabled is False
