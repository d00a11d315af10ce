"""A real supervisor with the HTTP listener on a free loopback port, and a small HTTP client."""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgebus.testing import EmbeddedBroker


class Http:
    """One keep-alive connection (http.client), JSON in and out."""

    def __init__(self, port: int, *, user: str | None = None, secret: str | None = None,
                 token: str | None = None, context: Any = None) -> None:
        self.port = port
        self.context = context
        self.auth: dict[str, str] = {}
        if token:
            self.auth["Authorization"] = f"Bearer {token}"
        elif user:
            cred = base64.b64encode(f"{user}:{secret}".encode()).decode()
            self.auth["Authorization"] = f"Basic {cred}"
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        if self.context is not None:
            return http.client.HTTPSConnection("localhost", self.port, timeout=30, context=self.context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        h = {**self.auth, **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        try:
            self.conn.request(method, path, body=data, headers=h)
            resp = self.conn.getresponse()
        except (ConnectionError, http.client.HTTPException):
            self.conn.close()
            self.conn = self._connect()
            self.conn.request(method, path, body=data, headers=h)
            resp = self.conn.getresponse()
        payload = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            self.conn.close()
            self.conn = self._connect()
        doc = json.loads(payload) if hdrs.get("content-type", "").startswith("application/json") else payload
        return resp.status, hdrs, doc

    def get(self, path: str, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("POST", path, body, **kw)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        code, _, doc = self.request(method, path, body)
        assert code == status, (code, doc)
        return doc

    def close(self) -> None:
        self.conn.close()


def error_of(doc: Any) -> tuple[int, str]:
    """(edgebus code, error name) of a JSON error answer."""
    e = doc["error"]
    assert set(e) == {"code", "name", "message", "retriable"} and e["message"], doc
    return e["code"], e["name"]


@pytest.fixture
def http_config() -> dict[str, Any]:
    return {}


@pytest.fixture
def http_broker(make_broker: Callable[..., EmbeddedBroker],
                http_config: dict[str, Any]) -> EmbeddedBroker:
    cfg: dict[str, Any] = {"topics": [{"name": "teapot.temperature"}]}
    cfg.update(http_config)
    # Port 0: the listener binds a free port itself (b.http_port says which), so no other
    # process can take it between choosing and binding; pinned so that a restart keeps it.
    cfg["http"] = {"enabled": True, "listen": "127.0.0.1:0", **cfg.get("http", {})}
    b = make_broker(cfg).start()
    b.pin_http_port()
    return b


@pytest.fixture
def api(http_broker: EmbeddedBroker) -> Iterator[Http]:
    c = Http(http_broker.http_port)
    yield c
    c.close()
