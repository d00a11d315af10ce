"""The HTTP API against a real supervisor, with a real HTTP client (http.client): every route,
and the typed JSON errors of bad input."""

from __future__ import annotations

import base64
import re
import socket
import threading
import time
from typing import Any

import pytest

from edgebus import Consumer, Producer
from edgebus.client.types import TopicPartition, partition_for_key
from edgebus.server.http.api import App
from edgebus.server.http.auth import Authenticator

from .conftest import Http, error_of

pytestmark = pytest.mark.integration
TOPIC = "teapot.temperature"


def test_every_route_is_in_the_openapi_document(api: Http) -> None:
    doc = api.ok("GET", "/openapi.json")
    served = {(m.lower(), p) for p, ops in doc["paths"].items() for m in ops}
    routes = {(m.lower(), t) for m, _, t, _ in App(Authenticator({})).routes}
    assert served == routes
    assert doc["openapi"].startswith("3.") and "Error" in doc["components"]["schemas"]


def test_status(api: Http) -> None:
    doc = api.ok("GET", "/api/status")
    assert TOPIC in doc["topics"] and doc["rss_bytes"] > 0 and doc["disk"]["total"] > 0
    assert doc["http"]["connections"] >= 1
    assert doc["topics"][TOPIC]["records_in"] == 0


def test_topics_create_describe_alter_delete(api: Http) -> None:
    t = api.ok("POST", "/api/topics", {"name": "kettles", "partitions": 3,
                                       "configs": {"retention_ms": "1d"}}, status=201)
    assert [p["partition"] for p in t["partitions"]] == [0, 1, 2]
    assert t["configs"]["retention_ms"] == "86400000"
    names = [x["name"] for x in api.ok("GET", "/api/topics")["topics"]]
    assert "kettles" in names and TOPIC in names and "__consumer_offsets" not in names
    assert api.ok("GET", "/api/topics/kettles")["configs"]["retention_ms"] == "86400000"
    altered = api.ok("PATCH", "/api/topics/kettles", {"configs": {"retention_ms": "2h"}})
    assert altered["configs"]["retention_ms"] == "7200000"
    code, _, doc = api.post("/api/topics", {"name": "kettles"})
    assert code == 409 and error_of(doc) == (7, "TopicExistsError")
    code, _, doc = api.request("PATCH", "/api/topics/kettles", {"configs": {"partitions": 5}})
    assert code == 400 and error_of(doc)[0] == 3 and "cannot be changed" in doc["error"]["message"]
    code, _, doc = api.request("PATCH", "/api/topics/kettles", {"configs": {"retention_mss": 5}})
    assert code == 400, doc
    assert api.ok("DELETE", "/api/topics/kettles") == {"deleted": "kettles"}
    code, _, doc = api.get("/api/topics/kettles")
    assert code == 404 and error_of(doc) == (5, "UnknownTopicError")
    code, _, doc = api.post("/api/topics", {"name": "bad name!"})
    assert code == 400 and error_of(doc)[1] == "InvalidTopicError"


def test_produce_one_and_a_batch_then_fetch_and_a_client_reads_the_same(api: Http,
                                                                      http_broker: Any) -> None:
    one = api.ok("POST", f"/api/topics/{TOPIC}/records", {"key": "pot-1", "value": {"celsius": 21.5}})
    assert one["offsets"] == [{"partition": 0, "offset": 0}]
    batch = api.ok("POST", f"/api/topics/{TOPIC}/records?acks=durable", {"records": [
        {"key": "pot-2", "value": "plain text", "headers": {"unit": "C"}},
        {"value": None, "timestamp": 1234},
        {"key": "pot-1", "value": "x", "headers": [["a", None], ["b", "2"]]},
    ]})
    assert [o["offset"] for o in batch["offsets"]] == [1, 2, 3]
    raw = bytes(range(256))
    b64 = api.ok("POST", f"/api/topics/{TOPIC}/records", {
        "encoding": "base64", "records": [{"key": base64.b64encode(b"k").decode(),
                                           "value": base64.b64encode(raw).decode()}]})
    assert b64["offsets"] == [{"partition": 0, "offset": 4}]

    got = api.ok("GET", f"/api/topics/{TOPIC}/records?offset=0&limit=3")
    assert [r["offset"] for r in got["records"]] == [0, 1, 2] and got["next_offset"] == 3
    assert got["high_watermark"] == 5 and got["log_start_offset"] == 0
    r0, r1, r2 = got["records"]
    assert (r0["key"], r0["value"], r0["encoding"]) == ("pot-1", '{"celsius":21.5}', "utf8")
    assert r1["headers"] == [["unit", "C"]] and r2["value"] is None and r2["timestamp"] == 1234
    rest = api.ok("GET", f"/api/topics/{TOPIC}/records?offset=3")["records"]
    assert rest[0]["headers"] == [["a", None], ["b", "2"]]
    assert rest[1]["encoding"] == "base64" and base64.b64decode(rest[1]["value"]) == raw
    assert base64.b64decode(rest[1]["key"]) == b"k"
    forced = api.ok("GET", f"/api/topics/{TOPIC}/records?offset=0&limit=1&encoding=base64")
    assert base64.b64decode(forced["records"][0]["value"]) == b'{"celsius":21.5}'
    latest = api.ok("GET", f"/api/topics/{TOPIC}/records?offset=latest")
    assert latest["records"] == [] and latest["next_offset"] == 5

    # The socket client sees exactly what HTTP wrote (and HTTP what the client wrote).
    with Consumer(socket=http_broker.socket, auto_offset_reset="earliest") as c:
        c.assign([TopicPartition(TOPIC, 0)])
        recs: list[Any] = []
        while len(recs) < 5:
            recs += [r for rs in c.poll(timeout_ms=2000).values() for r in rs]
    assert [(r.key, r.value) for r in recs[:3]] == [(b"pot-1", b'{"celsius":21.5}'),
                                                     (b"pot-2", b"plain text"), (None, None)]
    assert recs[1].headers == [("unit", b"C")] and recs[4].value == raw
    with Producer(socket=http_broker.socket) as p:
        p.send(TOPIC, b"\xff\xfe", key=b"bin").get(10)
    tail = api.ok("GET", f"/api/topics/{TOPIC}/records?offset=5")["records"]
    assert tail[0]["encoding"] == "base64" and base64.b64decode(tail[0]["value"]) == b"\xff\xfe"


def test_keys_go_where_a_producer_puts_them(api: Http) -> None:
    api.ok("POST", "/api/topics", {"name": "keyed", "partitions": 4}, status=201)
    keys = [f"pot-{i}" for i in range(12)]
    doc = api.ok("POST", "/api/topics/keyed/records", {"records": [{"key": k, "value": k} for k in keys]})
    assert [o["partition"] for o in doc["offsets"]] == [partition_for_key(k.encode(), 4) for k in keys]
    pinned = api.ok("POST", "/api/topics/keyed/records", {"partition": 3, "value": "here"})
    assert pinned["offsets"][0]["partition"] == 3
    got = api.ok("GET", "/api/topics/keyed/records?partition=3&offset=earliest&limit=1000")
    assert got["records"][-1]["value"] == "here"


def test_a_large_batch_is_split_to_the_topic_max_message_bytes(api: Http) -> None:
    api.ok("POST", "/api/topics", {"name": "small", "configs": {"max_message_bytes": 4096}}, status=201)
    doc = api.ok("POST", "/api/topics/small/records",
                 {"records": [{"value": "v" * 1000} for _ in range(20)]})
    assert [o["offset"] for o in doc["offsets"]] == list(range(20))
    code, _, doc = api.post("/api/topics/small/records", {"value": "v" * 5000})
    assert code == 413 and error_of(doc)[1] == "RecordTooLargeError"


def test_long_poll_fetch_is_answered_by_an_append(api: Http, http_broker: Any) -> None:
    def later() -> None:
        time.sleep(0.3)
        with Producer(socket=http_broker.socket) as p:
            p.send(TOPIC, b"boiled").get(10)

    t = threading.Thread(target=later)
    t.start()
    got = api.ok("GET", f"/api/topics/{TOPIC}/records?offset=0&wait_ms=20000")
    t.join()
    assert [r["value"] for r in got["records"]] == ["boiled"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: Any) -> Any:
    """One supervisor for the table of bad inputs below (each case leaves it as it was)."""
    from edgebus.testing import EmbeddedBroker

    b = EmbeddedBroker(tmp_path_factory.mktemp("bad-input"), config={
        "topics": [{"name": TOPIC}], "http": {"enabled": True, "listen": "127.0.0.1:0"}})
    b.start()
    c = Http(b.http_port)
    yield c
    c.close()
    b.stop()
    b.cleanup()


@pytest.mark.parametrize("method,path,body,raw,headers,status,code", [
    ("POST", f"/api/topics/{TOPIC}/records", None, b"{not json", {"Content-Type": "application/json"}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", None, b'{"value":"x"}', {"Content-Type": "text/plain"}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", [1, 2], None, {}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", {"records": []}, None, {}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", {"value": "x", "colour": 1}, None, {}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", {"encoding": "base64", "value": "!!"}, None, {}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", None, b'{"value": "\\ud800"}',
     {"Content-Type": "application/json"}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", None, b'{"value": "x", "headers": {"\\udfff": "v"}}',
     {"Content-Type": "application/json"}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", None, b'\xff\xfe', {"Content-Type": "application/json"}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records", {"value": "x", "partition": 7}, None, {}, 404, 6),
    ("POST", f"/api/topics/{TOPIC}/records", {"value": "x", "partition": -1}, None, {}, 400, 3),
    ("POST", f"/api/topics/{TOPIC}/records?acks=none", {"value": "x"}, None, {}, 400, 3),
    ("POST", "/api/topics/nope/records", {"value": "x"}, None, {}, 404, 5),
    ("POST", "/api/topics/__consumer_offsets/records", {"value": "x"}, None, {}, 400, 8),
    ("GET", "/api/topics/nope/records", None, None, {}, 404, 5),
    ("GET", f"/api/topics/{TOPIC}/records?offset=99", None, None, {}, 416, 10),
    ("GET", f"/api/topics/{TOPIC}/records?offset=-1", None, None, {}, 400, 3),
    ("GET", f"/api/topics/{TOPIC}/records?offset=abc", None, None, {}, 400, 3),
    ("GET", f"/api/topics/{TOPIC}/records?limit=0", None, None, {}, 400, 3),
    ("GET", f"/api/topics/{TOPIC}/records?limit=100000", None, None, {}, 400, 3),
    ("GET", f"/api/topics/{TOPIC}/records?partition=5", None, None, {}, 404, 6),
    ("GET", f"/api/topics/{TOPIC}/tail?from=yesterday", None, None, {}, 400, 3),
    ("GET", f"/api/topics/{TOPIC}/tail", None, None, {"Last-Event-ID": "banana"}, 400, 3),
    ("GET", "/api/topics/nope/tail", None, None, {}, 404, 5),
    ("GET", "/api/groups/nobody", None, None, {}, 404, 18),
    ("POST", "/api/groups/g/reset", {"topic": TOPIC, "to": "tomorrow"}, None, {}, 400, 3),
    ("GET", "/api/nothing", None, None, {}, 404, 3),
    ("DELETE", "/api/groups", None, None, {}, 405, 3),
    ("GET", "/console/../../etc/passwd", None, None, {}, 404, 3),
])
def test_bad_input_gets_a_typed_json_error(shared: Http, method: str, path: str, body: Any,
                                           raw: bytes | None, headers: dict[str, str],
                                           status: int, code: int) -> None:
    api = shared
    got, hdrs, doc = api.request(method, path, body, raw=raw, headers=headers)
    assert got == status, doc
    assert hdrs["content-type"] == "application/json"
    assert error_of(doc)[0] == code, doc
    # the connection still serves (bad input costs at most the request)
    assert api.ok("GET", "/api/topics")["topics"]


def test_a_huge_body_is_refused_before_it_is_read(http_broker: Any) -> None:
    port = http_broker.http_port
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /api/topics/teapot.temperature/records HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
        s.sendall(b"x" * 65536)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
    assert b'"code":3' in body and b"max_body_bytes" in body
    # through a client that sends the whole body anyway
    api = Http(port)
    big = b'{"value":"' + b"v" * (3 * 1024 * 1024) + b'"}'
    code, _, doc = api.request("POST", f"/api/topics/{TOPIC}/records", raw=big,
                               headers={"Content-Type": "application/json"})
    assert code == 413 and error_of(doc)[0] == 3
    assert api.ok("GET", f"/api/topics/{TOPIC}")["name"] == TOPIC


def test_malformed_http_gets_400_and_a_closed_connection(http_broker: Any) -> None:
    with socket.create_connection(("127.0.0.1", http_broker.http_port)) as s:
        s.sendall(b"GARBAGE\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert re.match(rb"HTTP/1.1 400 ", data) and b'"code":3' in data


def test_groups_list_describe_with_lag_and_reset(api: Http, http_broker: Any) -> None:
    api.ok("POST", f"/api/topics/{TOPIC}/records", {"records": [{"value": str(i)} for i in range(10)]})
    with Consumer(TOPIC, group_id="kitchen", socket=http_broker.socket,
                  auto_offset_reset="earliest") as c:
        seen = 0
        while seen < 4:
            seen += sum(map(len, c.poll(timeout_ms=2000, max_records=4 - seen).values()))
        c.commit()
        listed = api.ok("GET", "/api/groups")["groups"]
        assert [g["group"] for g in listed] == ["kitchen"] and listed[0]["members"] == 1
        d = api.ok("GET", "/api/groups/kitchen")
        assert d["partitions"][0]["committed"] == 4 and d["lag"] == 6
        assert len(d["members"]) == 1
        code, _, doc = api.post("/api/groups/kitchen/reset", {"topic": TOPIC, "to": "earliest"})
        assert code == 409 and error_of(doc)[1] == "GroupNotEmptyError"
    dry = api.ok("POST", "/api/groups/kitchen/reset", {"topic": TOPIC, "to": "offset", "value": 2,
                                                       "dry_run": True})
    assert dry["offsets"] == [{"topic": TOPIC, "partition": 0, "previous": 4, "offset": 2}]
    assert api.ok("GET", "/api/groups/kitchen")["lag"] == 6
    api.ok("POST", "/api/groups/kitchen/reset", {"topic": TOPIC, "to": "latest"})
    assert api.ok("GET", "/api/groups/kitchen")["lag"] == 0


def test_browsers_cannot_change_state_from_another_site(api: Http) -> None:
    evil = {"Origin": "http://evil.example"}
    code, _, doc = api.post("/api/topics", {"name": "evil"}, headers=evil)
    assert code == 403 and error_of(doc)[1] == "NotAuthenticatedError"
    code, _, doc = api.request("DELETE", f"/api/topics/{TOPIC}", headers={"Sec-Fetch-Site": "cross-site"})
    assert code == 403
    # same origin (the console itself) may
    own = {"Origin": f"http://127.0.0.1:{api.port}"}
    assert api.post("/api/topics", {"name": "mine"}, headers=own)[0] == 201
    # DNS rebinding: a page whose name now points at 127.0.0.1 sends its own Host
    code, _, doc = api.get("/api/topics", headers={"Host": "evil.example"})
    assert code == 403 and "loopback" in doc["error"]["message"]
    assert api.get("/api/topics", headers={"Host": f"localhost:{api.port}"})[0] == 200


def test_console_files_are_served_and_nothing_else(api: Http) -> None:
    code, hdrs, body = api.get("/")
    assert code == 200 and hdrs["content-type"].startswith("text/html") and b"console.js" in body
    assert "script-src 'self'" in hdrs["content-security-policy"]
    for f in ("console.js", "console.css"):
        assert api.get(f"/console/{f}")[0] == 200
    assert api.get("/console/nothing.js")[0] == 404


def test_connections_are_bounded(make_broker: Any) -> None:
    port = make_broker({"http": {"enabled": True, "listen": "127.0.0.1:0",
                                 "max_connections": 2}}).start().http_port
    first, second = Http(port), Http(port)
    assert first.get("/api/topics")[0] == second.get("/api/topics")[0] == 200
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /api/topics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        try:
            got = s.recv(100)
        except ConnectionResetError:  # closed with the request unread
            got = b""
        assert got == b""  # closed at once: the two others hold the slots
    assert first.get("/api/topics")[0] == 200  # and they keep working


def test_pipelined_requests_are_answered_in_order(http_broker: Any) -> None:
    body = b'{"value":"p"}'
    reqs = (b"GET /api/topics/teapot.temperature HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"POST /api/topics/teapot.temperature/records?acks=durable HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            b"HEAD /api/topics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /api/topics/teapot.temperature/records?offset=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Connection: close\r\n\r\n") % (len(body), body)
    with socket.create_connection(("127.0.0.1", http_broker.http_port)) as s:
        s.sendall(reqs)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    heads = re.findall(rb"HTTP/1.1 (\d+) ", data)
    assert heads == [b"200"] * 4, data
    # in order: the topic, the produce's offset (after its fsync), HEAD without a body, the record
    assert data.index(b'"name":"teapot.temperature"') < data.index(b'"offsets":[{"partition":0,"offset":0}]') \
        < data.index(b'"value":"p"')
    head_part = data.split(b"HTTP/1.1 ")[3]
    assert b"content-length: " in head_part and head_part.endswith(b"\r\n\r\n")


def test_expect_100_continue_is_answered_before_the_body(http_broker: Any) -> None:
    body = b'{"value":"after 100"}'
    with socket.create_connection(("127.0.0.1", http_broker.http_port), timeout=30) as s:
        s.sendall(b"POST /api/topics/teapot.temperature/records HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        interim = s.recv(1000)  # the body is sent only after this, as curl does for large ones
        assert interim.startswith(b"HTTP/1.1 100 ")
        s.sendall(body)
        data = b""
        while b'"offsets"' not in data:
            data += s.recv(65536)
    assert data.startswith(b"HTTP/1.1 200 ")


def test_a_client_gone_during_a_long_poll_is_cleaned_up(api: Http, http_broker: Any) -> None:
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", http_broker.http_port))
        s.sendall(b"GET /api/topics/teapot.temperature/records?offset=latest&wait_ms=30000 HTTP/1.1\r\n"
                  b"Host: 127.0.0.1\r\n\r\n")
        s.close()
    api.ok("POST", f"/api/topics/{TOPIC}/records", {"value": "wake them"})  # answers the parked fetches
    for _ in range(400):
        doc = api.ok("GET", "/api/status")
        if doc["http"]["connections"] == 1 and doc["parked_fetches"] == 0:
            break
        time.sleep(0.05)
    assert doc["http"]["connections"] == 1 and doc["parked_fetches"] == 0


def test_a_topic_made_again_with_fewer_partitions_takes_the_next_produce(api: Http) -> None:
    """Produce remembers a topic's partition count for a moment; a topic deleted and created
    again meanwhile must not make a produce fail."""
    api.ok("POST", "/api/topics", {"name": "shaped", "partitions": 4}, status=201)
    key = next(f"k{i}" for i in range(100) if partition_for_key(f"k{i}".encode(), 4) == 3)
    assert api.ok("POST", "/api/topics/shaped/records", {"key": key, "value": "a"})["offsets"][0]["partition"] == 3
    api.ok("DELETE", "/api/topics/shaped")
    api.ok("POST", "/api/topics", {"name": "shaped", "partitions": 1, "configs": {"max_message_bytes": 4096}},
           status=201)
    assert api.ok("POST", "/api/topics/shaped/records", {"key": key, "value": "b"})["offsets"] == [
        {"partition": 0, "offset": 0}]
    api.ok("DELETE", "/api/topics/shaped")
    code, _, doc = api.post("/api/topics/shaped/records", {"value": "c"})
    assert code == 404 and error_of(doc)[0] == 5
