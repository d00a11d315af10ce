"""The web console in a real browser (headless Chromium over the DevTools protocol) against a
supervisor with the teapot example running: Mosquitto, the MQTT bridge, the boil detector and two
teapots. Checks what the page shows and saves screenshots at a phone and a desktop width
(into $EDGEBUS_SCREENSHOTS when set, e.g. docs/screenshots, else the test's temp directory)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgebus.testing import free_port, wait_for

from .cdp import Browser, chromium_path
from .conftest import Http

REPO = Path(__file__).resolve().parents[2]
TEAPOT = REPO / "examples" / "teapot"
MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(chromium_path() is None, reason="headless Chromium is not installed "
                       "(apt-get install chromium; ./scripts/quickstart test installs it as root)"),
    pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed (apt-get install mosquitto)"),
]
TOPIC = "teapot.temperature"


@pytest.fixture
def kitchen(http_broker: Any, tmp_path: Path) -> Iterator[Any]:
    """The teapot example on the supervisor: Mosquitto, bridge, detector, teapots pot-1 and pot-2."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}

    def start(name: str, cmd: list[str]) -> None:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (the child's output)
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))

    try:
        port = free_port()
        conf = tmp_path / "mosquitto.conf"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false"]
        if os.geteuid() == 0:
            lines.append("user root")
        conf.write_text("\n".join(lines) + "\n")
        start("mosquitto", [str(MOSQUITTO), "-c", str(conf)])
        cfg = yaml.safe_load((TEAPOT / "bridge.yaml").read_text())
        cfg["mqtt"]["port"] = port
        cfg["edgebus"]["socket"] = http_broker.socket
        cfg["status"]["file"] = str(tmp_path / "bridge.status.json")
        (tmp_path / "bridge.yaml").write_text(yaml.safe_dump(cfg))
        start("bridge", [sys.executable, "-m", "edgebus.cli.main", "bridge", "mqtt", "--config",
                         str(tmp_path / "bridge.yaml")])

        def bridge_ready() -> bool:
            try:
                doc = json.loads((tmp_path / "bridge.status.json").read_text())
            except (OSError, ValueError):
                return False
            return bool(doc["mqtt"]["connected"] and doc["gauges"]["edgebus_connected"])

        wait_for(bridge_ready, 60, "the MQTT bridge")
        start("detector", [sys.executable, str(TEAPOT / "boil_detector.py"), "--socket", http_broker.socket])
        # Reporting for the whole test, also once switched off: the page's in/s is the change
        # between two status reads 5 s apart, so it is above 0 only while readings still come
        # (a pot that stops at 90 C after its "off" stops within seconds: a slow run then saw 0).
        for pot, interval in (("pot-1", "300"), ("pot-2", "450")):
            start(pot, [sys.executable, str(TEAPOT / "teapot.py"), "--port", str(port), "--id", pot,
                        "--interval-ms", interval, "--seconds", "900", "--keep-reporting"])
        yield http_broker
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def end_offsets(api: Http) -> dict[int, int]:
    t = api.ok("GET", f"/api/topics/{TOPIC}")
    return {p["partition"]: p["log_end_offset"] for p in t["partitions"]}


def test_the_console_shows_the_teapot(kitchen: Any, tmp_path: Path) -> None:
    out = Path(os.environ.get("EDGEBUS_SCREENSHOTS", tmp_path / "screenshots"))
    if not out.is_absolute():
        out = REPO / out
    port = kitchen.http_port
    api = Http(port)
    wait_for(lambda: sum(end_offsets(api).values()) >= 6 if TOPIC in
             [t["name"] for t in api.ok("GET", "/api/topics")["topics"]] else False, 60, "readings")
    browser = Browser()
    try:
        # --- a phone: the live tail and its chart
        before = end_offsets(api)
        browser.open(f"http://127.0.0.1:{port}/#tail/{TOPIC}", 390, 844, mobile=True)
        new = (f"[...document.querySelectorAll('#tail-list li.record')].filter(li => "
               f"+li.dataset.offset >= ({json.dumps({str(k): v for k, v in before.items()})})"
               f"[li.dataset.partition]).length")
        assert browser.wait_for(f"{new} >= 2", 60)  # readings that came after the page opened
        assert browser.wait_for("document.querySelectorAll('#chart circle.pt').length >= 5", 30)
        legend = browser.wait_for("(t => t.includes('pot-1') && t.includes('pot-2') && t)"
                                  "(document.querySelector('#legend').textContent)", 30)
        assert "pot-1: " in legend
        pretty = browser.eval("document.querySelector('#tail-list li.record pre').textContent")
        assert '\n  "celsius": ' in pretty  # pretty-printed JSON
        browser.screenshot(out / "console-phone-tail.png")
        # --- the topics with partitions, offsets, sizes, rates
        browser.eval("location.hash = '#topics'")
        row = browser.wait_for(f"(r => r && r.textContent)(document.querySelector("
                               f"'#topics-table tr[data-topic=\"{TOPIC}\"]'))", 30)
        assert TOPIC in row
        # partitions, offsets (start-end per partition; hidden on a phone, in the page all the
        # same) and size, as the API reports them
        cells = browser.eval(f"[...document.querySelector('#topics-table tr[data-topic=\"{TOPIC}\"]')"
                             ".children].map(td => td.textContent)")
        api_t = api.ok("GET", f"/api/topics/{TOPIC}")
        assert cells[1] == str(len(api_t["partitions"]))
        start, end = (int(x) for x in cells[2].split(",")[0].split("\u2013"))
        assert start == 0 and 6 <= end <= api_t["partitions"][0]["log_end_offset"]
        assert re.fullmatch(r"[\d.]+ (B|KiB|MiB)", cells[3]) and cells[3] != "0 B"
        assert browser.wait_for("!!document.querySelector('#topics-table tr[data-topic=\"teapot.commands\"]')", 30)
        # rates come from two status reads 5 s apart: the teapots' readings show as records in/s
        assert browser.wait_for(f"+document.querySelector('#topics-table tr[data-topic=\"{TOPIC}\"]')"
                                ".children[4].textContent > 0", 30)
        browser.screenshot(out / "console-phone-topics.png")
        # --- a desktop: overview, groups with lag over time, the tail
        browser.open(f"http://127.0.0.1:{port}/#overview", 1280, 860)
        cards = browser.wait_for("(t => t.includes('disk free') && t)(document.querySelector('#cards').innerText)", 30)
        assert "memory (RSS)" in cards and "records in/s" in cards
        assert browser.wait_for("document.querySelectorAll('#clients tbody tr').length >= 3", 30)
        browser.screenshot(out / "console-desktop-overview.png")
        browser.eval("location.hash = '#groups'")
        assert browser.wait_for("!!document.querySelector('.group[data-group=\"boil-detector\"] svg polyline')", 30)
        browser.eval("location.hash = '#tail/teapot.temperature'")
        assert browser.wait_for("document.querySelectorAll('#chart circle.pt').length >= 5", 30)
        time.sleep(1.0)  # a few more readings on the chart
        browser.screenshot(out / "console-desktop-tail.png")
        assert browser.eval("window.__errors") == []  # no script error on any view
    finally:
        browser.close()
    for name in ("console-phone-tail", "console-phone-topics", "console-desktop-overview",
                 "console-desktop-tail"):
        assert (out / f"{name}.png").stat().st_size > 5000
