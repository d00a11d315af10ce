"""Overlapping ingress filters (issue 14 item 14): each message recorded once (MQTT 5
subscription identifiers), filters removed from the config unsubscribed when the session resumes,
`--check` warnings, and the refusal of an ingress/egress overlap that would loop. The Router's
rules without I/O first, then against a real Mosquitto, a real supervisor and the bridge as a
real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from mqtt_helpers import REPO, Device, Mosquitto, needs_mosquitto, read_all

from bridges.mqtt import filters
from bridges.mqtt import routes as R
from bridges.mqtt.config import config_from_mapping
from edgebus.errors import ConfigError


def router(*filters: str) -> R.Router:
    return R.Router([R.IngressRoute(f, f"t{i}", "dlq") for i, f in enumerate(filters)])


# --- the rules, without I/O ----------------------------------------------------------------------

def test_subscription_ids_are_stable_per_filter_and_distinct() -> None:
    a = filters.subscription_ids(["dev/+/data", "#"])
    b = filters.subscription_ids(["x/y", "#", "dev/+/data"])
    assert a["#"] == b["#"] and a["dev/+/data"] == b["dev/+/data"]
    assert a["#"] != a["dev/+/data"]
    assert all(1 <= n <= filters.MAX_SUBSCRIPTION_ID for n in b.values())


def test_first_declared_route_wins_and_the_other_copy_is_skipped() -> None:
    r = router("dev/+/data", "#")
    w, catch_all = r.routes
    ids = r.ids
    r.new_session(set(), fresh={"dev/+/data", "#"})  # a new session: both subscribed now, in order
    # The catch-all's copy may come first: skipped, since the winner was subscribed before it.
    assert r.route("dev/1/data", [ids["#"]]) is R.SKIP
    assert r.route("dev/1/data", [ids["dev/+/data"]]) is w
    assert r.route("dev/1/data", [ids["dev/+/data"], ids["#"]]) is w  # one copy, both ids
    assert r.route("other/x", [ids["#"]]) is catch_all
    assert r.route("dev/1/data", []) is w  # no identifiers (MQTT 3.1.1): by topic


def test_a_copy_is_kept_unless_the_winner_surely_delivers_it() -> None:
    r = router("dev/+/data", "#")
    w, catch_all = r.routes
    ids = r.ids
    # A resumed session that held only '#' before: queued messages came through '#' alone.
    r.new_session({"#"}, fresh={"dev/+/data"})
    assert r.route("dev/1/data", [ids["#"]]) is catch_all  # recorded, not lost
    # Once a copy through the winner arrived, everything before it was delivered (in order).
    assert r.route("dev/2/data", [ids["dev/+/data"]]) is w
    assert r.route("dev/3/data", [ids["#"]]) is R.SKIP
    # Nothing known about the resumed session (no session file): nothing is skipped.
    r.new_session(set(), fresh=set())
    assert r.route("dev/1/data", [ids["#"]]) is catch_all
    # The winner was granted in the session before: its copy comes, whatever the order.
    r.new_session({"dev/+/data", "#"}, fresh=set())
    assert r.route("dev/1/data", [ids["#"]]) is R.SKIP
    # ... unless the broker refused it now.
    r.refused("dev/+/data")
    assert r.route("dev/1/data", [ids["#"]]) is catch_all


def test_copies_through_stale_subscriptions() -> None:
    r = router("#")
    (catch_all,) = r.routes
    stale = filters.subscription_ids(["dev/+/data"])["dev/+/data"]
    r.new_session({"#"}, fresh=set())
    assert r.route("dev/1/data", [stale]) is R.SKIP  # '#' delivers it too
    r.new_session(set(), fresh=set())
    assert r.route("dev/1/data", [stale]) is catch_all  # queued before '#' existed: kept


def test_a_shared_winner_never_makes_a_copy_skipped() -> None:
    r = router("$share/g/dev/#", "dev/+/data")
    _shared, plain = r.routes
    r.new_session({"$share/g/dev/#", "dev/+/data"}, fresh=set())
    assert r.route("dev/1/data", [r.ids["dev/+/data"]]) is plain


def test_shadowed_filters_and_overlaps() -> None:
    assert filters.shadowed(["#", "a/+/c", "dev/+/data", "a/b"]) == {1: 0, 2: 0, 3: 0}
    assert filters.shadowed(["dev/+/data", "#"]) == {}
    assert filters.shadowed(["$share/g/#", "a/b"]) == {}
    assert filters.filters_overlap("a/+/c", "a/b/+") and not filters.filters_overlap("a/b", "a/c")
    assert filters.filters_overlap("a/#", "a") and not filters.filters_overlap("#", "$SYS/x")
    assert filters.filter_covers("a/#", "a/+/c") and not filters.filter_covers("a/+/c", "a/#")


def _cfg(ingress: list[dict[str, Any]], egress: list[dict[str, Any]] | None = None,
         protocol: str = "5") -> dict[str, Any]:
    return {"mqtt": {"protocol": protocol}, "ingress": ingress, "egress": egress or []}


@pytest.mark.parametrize(("protocol", "filt", "why"), [
    ("3.1.1", "devices/#", "MQTT 3.1.1 has no noLocal"),
    ("5", "$share/g/devices/+/command", "noLocal is not allowed on a shared subscription"),
])
def test_ingress_overlapping_egress_is_refused_without_nolocal(protocol, filt, why) -> None:
    cfg = _cfg([{"filter": filt, "topic": "in"}],
               [{"topic": "cmds", "mqtt_topic": "devices/{key}/command"}], protocol)
    with pytest.raises(ConfigError) as e:
        config_from_mapping(cfg)
    assert "ingress[0].filter" in str(e.value) and why in str(e.value)
    assert "\n" not in str(e.value)


def test_ingress_overlapping_egress_is_fine_with_nolocal() -> None:
    config_from_mapping(_cfg([{"filter": "devices/#", "topic": "in"}],
                             [{"topic": "cmds", "mqtt_topic": "devices/{key}/command"}]))
    config_from_mapping(_cfg([{"filter": "sensors/#", "topic": "in"}],
                             [{"topic": "cmds", "mqtt_topic": "devices/{key}/command"}], "3.1.1"))


def run_check(tmp_path: Path, cfg: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bridge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "edgebus.cli.main", "bridge", "mqtt", "--config",
                           str(path), "--check"], env=env, capture_output=True, text=True,
                          timeout=30)


def test_check_warns_about_overlapping_filters(tmp_path: Path) -> None:
    out = run_check(tmp_path, _cfg([{"filter": "dev/+/data", "topic": "a"},
                                    {"filter": "#", "topic": "b"},
                                    {"filter": "x/y", "topic": "c"}]))
    assert out.returncode == 0, out.stderr
    warnings = [ln for ln in out.stdout.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 2, out.stdout
    assert "'dev/+/data' and ingress[1] '#' overlap" in warnings[1]
    assert "recorded once, to ingress[0]" in warnings[1]
    assert "ingress[2] never gets a message" in warnings[0]
    out = run_check(tmp_path, _cfg([{"filter": "dev/+/data", "topic": "a"},
                                    {"filter": "#", "topic": "b"}], protocol="3.1.1"))
    assert "recorded twice" in out.stdout and "mqtt.protocol 5" in out.stdout
    out = run_check(tmp_path, _cfg([{"filter": "a/#", "topic": "a"},
                                    {"filter": "b/#", "topic": "b"}]))
    assert "warning:" not in out.stdout


# --- against a real Mosquitto --------------------------------------------------------------------

def bridge_config(mosq: Mosquitto, socket: str, ingress: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "mqtt": {"host": "127.0.0.1", "port": mosq.port, "client_id": "bridge-overlap",
                 "reconnect_min_ms": 50, "reconnect_max_ms": 500},
        "edgebus": {"socket": socket, "acks": "written", "create_topics": True},
        "ingress": ingress,
    }


def publish(dev: Device, topic: str, seqs: range) -> None:
    for i in seqs:
        dev.publish(i, topic=topic)
    dev.flush()


def values(socket: str, topic: str, expect: int) -> list[int]:
    return sorted(json.loads(r.value)["seq"] for r in read_all(socket, topic, expect))


@pytest.mark.integration
@needs_mosquitto
def test_overlapping_filters_record_each_message_once(
        mosquitto, edgebus_broker, make_bridge) -> None:
    sock = edgebus_broker.socket
    bridge = make_bridge(bridge_config(mosquitto, sock, [
        {"filter": "dev/+/data", "topic": "t.data"}, {"filter": "#", "topic": "t.all"}])).start()
    bridge.wait_connected()
    dev = Device(mosquitto.port, "d0", "dev/d0/data")
    publish(dev, "dev/d0/data", range(20))
    publish(dev, "other/x", range(100, 105))
    st = bridge.wait_status(lambda s: s["counters"]["in_acked"] >= 45
                            and s["gauges"]["in_pending"] == 0, 30, "every copy acknowledged")
    assert values(sock, "t.data", 20) == list(range(20))
    assert values(sock, "t.all", 5) == list(range(100, 105))
    # Mosquitto sent two copies of each dev/... message; one of each was skipped.
    assert st["counters"]["in_skipped_copies"] == 20
    assert st["counters"]["in_dead_lettered"] == 0
    dev.close()
    assert bridge.stop() == 0


@pytest.mark.integration
@needs_mosquitto
def test_a_removed_route_is_unsubscribed_when_the_session_resumes(
        mosquitto, edgebus_broker, make_bridge) -> None:
    sock = edgebus_broker.socket
    both = [{"filter": "dev/+/data", "topic": "t.data"}, {"filter": "#", "topic": "t.all"}]
    bridge = make_bridge(bridge_config(mosquitto, sock, both)).start()
    bridge.wait_connected()
    assert bridge.stop() == 0

    dev = Device(mosquitto.port, "d0", "dev/d0/data")
    publish(dev, "dev/d0/data", range(5))  # queued in the session, through both subscriptions

    # The route is removed; the broker's session still holds its subscription.
    bridge = make_bridge(bridge_config(mosquitto, sock, both[1:])).start()
    bridge.wait_connected()
    bridge.wait_status(lambda s: s["counters"]["in_acked"] >= 10, 30, "the queued copies")
    publish(dev, "dev/d0/data", range(5, 25))
    st = bridge.wait_status(lambda s: s["counters"]["in_appended"] >= 25
                            and s["gauges"]["in_pending"] == 0, 30, "25 records")
    assert values(sock, "t.all", 25) == list(range(25))  # each once
    assert "unsubscribing from filter(s) no longer configured" in bridge.log()
    assert "'dev/+/data'" in bridge.log()
    # After the unsubscribe, live messages come once: only the 5 queued ones had a second copy.
    assert st["counters"]["in_received"] == 30
    dev.close()
    assert bridge.stop() == 0


def test_session_file_remembers_granted_and_stale_filters_per_broker(tmp_path: Path) -> None:
    from bridges.mqtt.subscriptions import Subscriptions, load_session

    path = tmp_path / "session.json"
    s = Subscriptions([("a/#", 1), ("b/#", 1)], True, path, "h:1/c", router("a/#", "b/#"))
    assert s.connected(session_present=False) == []
    s.acknowledged(["a/#", "b/#"], [False, True])  # b/# refused
    assert load_session(path, "h:1/c").granted == {"a/#"}
    assert load_session(path, "h:1/c").maybe == {"a/#", "b/#"}
    assert not load_session(path, "other:1/c").known
    s2 = Subscriptions([("b/#", 1)], True, path, "h:1/c")
    assert s2.connected(session_present=True) == ["a/#"]  # to unsubscribe
    s2.unsubscribed(["a/#"])
    assert load_session(path, "h:1/c").maybe == {"b/#"}
