"""The live tail (Server-Sent Events) against a real supervisor: it is fed by parked fetches, and
a client that reconnects with Last-Event-ID after a supervisor restart (SIGTERM or kill -9)
misses nothing and gets nothing twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Http
from .sse import SseClient

pytestmark = pytest.mark.integration
TOPIC = "teapot.temperature"


def records(client: SseClient, until: Any) -> Iterator[dict[str, Any]]:
    for ev in client.events():
        if ev.get("event") == "record":
            r = json.loads(ev["data"])
            yield r
            if until(r):
                return


def produce(port: int, topic: str, values: range, keyed: bool = False) -> None:
    api = Http(port)
    for start in range(values.start, values.stop, 25):
        chunk = range(start, min(start + 25, values.stop))
        api.ok("POST", f"/api/topics/{topic}/records", {"records": [
            {"value": str(i), **({"key": f"pot-{i % 5}"} if keyed else {})} for i in chunk]})
    api.close()


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_tail_resumes_after_a_supervisor_restart_without_loss_or_duplicates(
        http_broker: Any, how: str) -> None:
    port = http_broker.http_port
    produce(port, TOPIC, range(0, 100))
    seen: list[int] = []
    c = SseClient(port, f"/api/topics/{TOPIC}/tail?from=earliest")
    # live records arrive while the stream waits in a parked fetch
    feeder = threading.Thread(target=produce, args=(port, TOPIC, range(100, 150)))
    for r in records(c, lambda r: r["offset"] == 119):
        seen.append(r["offset"])
        if r["offset"] == 99:
            feeder.start()
    feeder.join()
    if how == "kill9":
        http_broker.kill9()
    else:
        assert http_broker.stop() == 0
    # the browser handles what had arrived, then sees the stream end or break
    seen += [int(json.loads(ev["data"])["offset"]) for ev in c.events() if ev.get("event") == "record"]
    c.close()
    http_broker.start()
    c = SseClient(port, f"/api/topics/{TOPIC}/tail?from=earliest", last_id=c.last_id)
    feeder = threading.Thread(target=produce, args=(port, TOPIC, range(150, 200)))
    feeder.start()
    for r in records(c, lambda r: r["offset"] == 199):
        seen.append(r["offset"])
        assert r["value"] == str(r["offset"])
    feeder.join()
    c.close()
    assert seen == list(range(200))


def test_a_multi_partition_tail_resumes_per_partition(http_broker: Any) -> None:
    port = http_broker.http_port
    api = Http(port)
    api.ok("POST", "/api/topics", {"name": "kettles", "partitions": 3}, status=201)
    produce(port, "kettles", range(0, 90), keyed=True)
    seen: list[tuple[int, int, str]] = []
    c = SseClient(port, "/api/topics/kettles/tail?from=earliest")
    for r in records(c, lambda r: len(seen) >= 39):
        seen.append((r["partition"], r["offset"], r["value"]))
    assert c.last_id is not None and c.last_id.count(":") == 3  # "p:o,p:o,p:o"
    http_broker.kill9()
    c.close()  # this client drops what had not been read yet: the id says where it was
    http_broker.start()
    produce(port, "kettles", range(90, 120), keyed=True)
    c = SseClient(port, "/api/topics/kettles/tail", last_id=c.last_id)
    for r in records(c, lambda r: len(seen) >= 120):
        seen.append((r["partition"], r["offset"], r["value"]))
    c.close()
    assert sorted(int(v) for _, _, v in seen) == list(range(120))
    for p in range(3):
        offsets = [o for q, o, _ in seen if q == p]
        assert offsets == list(range(len(offsets)))


def test_the_number_of_streams_is_bounded(make_broker: Any) -> None:
    b = make_broker({"topics": [{"name": TOPIC}],
                     "http": {"enabled": True, "listen": "127.0.0.1:0", "max_streams": 1}}).start()
    port = b.http_port
    first = SseClient(port, f"/api/topics/{TOPIC}/tail")
    code, _, doc = Http(port).get(f"/api/topics/{TOPIC}/tail")
    assert code == 503 and doc["error"]["name"] == "ServerBusyError"
    first.close()
    # once the first is gone, a new one may open
    api = Http(port)
    for _ in range(200):  # the supervisor sees the close on its next read
        if api.ok("GET", "/api/status")["http"]["streams"] == 0:
            break
        time.sleep(0.05)
    again = SseClient(port, f"/api/topics/{TOPIC}/tail")
    again.close()
    b.stop()


def test_what_http_acknowledged_survives_a_kill9(http_broker: Any) -> None:
    """acks=durable over HTTP means what it means on the socket: after kill -9 of the supervisor
    mid-produce, every record whose POST was answered is there, at its offset."""
    port = http_broker.http_port
    acked: dict[int, str] = {}
    stop = threading.Event()

    def writer() -> None:
        api = Http(port)
        i = 0
        while not stop.is_set():
            values = [f"v{i + j}" for j in range(10)]
            try:
                code, _, doc = api.post(f"/api/topics/{TOPIC}/records?acks=durable",
                                        {"records": [{"value": v} for v in values]})
            except OSError:
                return  # the supervisor died with this request in flight: its fate is unknown
            if code != 200:
                return
            for v, o in zip(values, doc["offsets"], strict=True):
                acked[o["offset"]] = v
            i += 10

    t = threading.Thread(target=writer)
    t.start()
    while len(acked) < 200:
        time.sleep(0.01)
    http_broker.kill9()
    stop.set()
    t.join()
    http_broker.start()
    api = Http(port)
    got: dict[int, str] = {}
    offset = 0
    while True:
        page = api.ok("GET", f"/api/topics/{TOPIC}/records?offset={offset}&limit=1000")
        got.update({r["offset"]: r["value"] for r in page["records"]})
        if page["next_offset"] >= page["high_watermark"]:
            break
        offset = page["next_offset"]
    assert {o: got.get(o) for o in acked} == acked
