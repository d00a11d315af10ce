"""The HTTP API's per-request bounds of docs/HTTP.md "Bounds" that test_api.py does not reach:
records per produce request and headers per record. Each is refused whole, with a typed JSON
error naming the bound, and nothing of the request is appended."""

from __future__ import annotations

from typing import Any

import pytest

from edgebus import format as F
from edgebus.server.http.records import MAX_RECORDS_PER_ANSWER, MAX_RECORDS_PER_PRODUCE

from .conftest import Http, error_of

pytestmark = pytest.mark.integration
TOPIC = "teapot.temperature"


def end_offset(api: Http) -> int:
    return int(api.ok("GET", f"/api/topics/{TOPIC}")["partitions"][0]["log_end_offset"])


def test_records_per_produce_request_are_bounded(api: Http) -> None:
    at_most = [{"value": "v"} for _ in range(MAX_RECORDS_PER_PRODUCE)]
    assert len(api.ok("POST", f"/api/topics/{TOPIC}/records", {"records": at_most})["offsets"]) \
        == MAX_RECORDS_PER_PRODUCE
    code, _, doc = api.post(f"/api/topics/{TOPIC}/records", {"records": [*at_most, {"value": "v"}]})
    assert code == 400 and error_of(doc) == (3, "InvalidRequestError")
    assert f"at most {MAX_RECORDS_PER_PRODUCE}" in doc["error"]["message"]
    assert end_offset(api) == MAX_RECORDS_PER_PRODUCE  # nothing of the refused request


def test_headers_per_record_are_bounded(api: Http) -> None:
    many = {f"h{i}": "x" for i in range(F.MAX_HEADERS_PER_RECORD + 1)}
    code, _, doc = api.post(f"/api/topics/{TOPIC}/records",
                            {"records": [{"value": "fine"}, {"value": "v", "headers": many}]})
    assert code == 400 and error_of(doc) == (3, "InvalidRequestError")
    assert "records[1].headers" in doc["error"]["message"]
    assert end_offset(api) == 0
    del many["h0"]
    got = api.ok("POST", f"/api/topics/{TOPIC}/records", {"value": "v", "headers": many})
    assert got["offsets"][0]["offset"] == 0


def test_a_fetch_answer_holds_at_most_its_limit(api: Any) -> None:
    api.ok("POST", f"/api/topics/{TOPIC}/records",
           {"records": [{"value": str(i)} for i in range(MAX_RECORDS_PER_ANSWER + 5)]})
    got = api.ok("GET", f"/api/topics/{TOPIC}/records?offset=0&limit={MAX_RECORDS_PER_ANSWER}")
    assert len(got["records"]) == MAX_RECORDS_PER_ANSWER
    assert got["next_offset"] == MAX_RECORDS_PER_ANSWER
    code, _, doc = api.get(f"/api/topics/{TOPIC}/records?offset=0&limit={MAX_RECORDS_PER_ANSWER + 1}")
    assert code == 400 and error_of(doc)[0] == 3
