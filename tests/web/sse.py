"""An EventSource client for the live tail's tests (test_sse, test_sse_reload,
test_acl_http_paths)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator


class SseClient:
    """An EventSource as a browser runs it: events in order, the last id remembered."""

    def __init__(self, port: int, path: str, last_id: str | None = None,
                 authorization: str | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        if authorization is not None:  # as a browser sends after its login
            headers["Authorization"] = authorization
        self.conn.request("GET", path, headers=headers)
        self.resp = self.conn.getresponse()
        assert self.resp.status == 200, self.resp.read()
        assert self.resp.getheader("content-type", "").startswith("text/event-stream")
        self.last_id: str | None = last_id

    def events(self) -> Iterator[dict[str, str]]:
        """Events until the stream ends or breaks (as the browser sees it)."""
        ev: dict[str, str] = {}
        while True:
            try:
                line = self.resp.readline()
            except (OSError, http.client.HTTPException):
                return
            if not line:
                return
            text = line.decode().rstrip("\r\n")
            if text == "":
                if "id" in ev:
                    self.last_id = ev["id"]
                if "data" in ev:
                    yield ev
                ev = {}
            elif not text.startswith(":"):
                name, _, value = text.partition(":")
                ev[name] = value[1:] if value.startswith(" ") else value

    def next_event(self) -> dict[str, str]:
        return next(self.events())

    def ended(self) -> bool:
        return next(self.events(), None) is None

    def close(self) -> None:
        self.conn.close()
