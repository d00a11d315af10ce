"""The HTTP API's routes (docs/HTTP.md; the OpenAPI document is openapi.py).

Every route that touches the broker is an exchange (exchange.py): it yields the same requests a
socket client sends, so the dispatcher and the handlers (their checks, limits and errors) serve
it. `App.handle` authenticates, applies the browser rules (auth.py), finds the route, and turns
every EdgebusError into a JSON error with the edgebus code.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from edgebus import errors as E
from edgebus import format as F
from edgebus.config import TOPIC_CONFIG_KEYS, parse_topic_setting
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.server.http import records as R
from edgebus.server.http.auth import REALM, Authenticator, check_origin, is_loopback_host
from edgebus.server.http.exchange import Call, Reply, Request, error_reply, json_reply
from edgebus.server.http.openapi import document
from edgebus.server.http.sse import tail

if TYPE_CHECKING:
    from edgebus.server.listeners.http import HttpListener

STATIC = Path(__file__).with_name("static")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# The console's pages may load only this server's own scripts and styles (no CDN, no inline JS).
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
RESET_TO = {"earliest": G.RESET_EARLIEST, "latest": G.RESET_LATEST, "offset": G.RESET_OFFSET,
            "timestamp": G.RESET_TIMESTAMP}
MAX_WAIT_MS = 30_000
SHAPE_TTL_S = 2.0  # how long a produce trusts a topic's partition count and max_message_bytes
MAX_SHAPES = 1024

Exchange = Generator[Any, Any, Reply]
Route = Callable[..., "Reply | Exchange"]


def qint(req: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = req.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except ValueError:
        raise E.InvalidRequestError(f"query parameter {name} must be an integer, got {raw!r}") from None
    if not lo <= v <= hi:
        raise E.InvalidRequestError(f"query parameter {name} must be from {lo} to {hi}, got {v}")
    return v


def topic_doc(t: M.TopicMetadata) -> dict[str, Any]:
    return {"name": t.name,
            "partitions": [{"partition": p.partition, "log_start_offset": p.log_start_offset,
                            "log_end_offset": p.log_end_offset, "size_bytes": p.size_bytes,
                            "segments": p.segments} for p in t.partitions],
            "configs": {c.name: c.value for c in t.configs}}


def one_topic(resp: M.MetadataResponse, name: str) -> M.TopicMetadata:
    t = resp.topics[0] if resp.topics else None
    if t is None:
        raise E.UnknownTopicError(f"unknown topic {name!r}")
    if t.error_code:
        raise E.error_for_code(t.error_code, t.error_message)
    return t


def configs_of(doc: Any, where: str) -> list[M.ConfigEntry]:
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise E.InvalidRequestError(f"{where} must be an object of setting -> value")
    out = []
    for k, v in doc.items():
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise E.InvalidRequestError(f"{where}.{k} must be a string or an integer")
        if k in TOPIC_CONFIG_KEYS:  # "1d", "64MiB" as in the config file and the CLI
            try:
                v = parse_topic_setting(k, str(v))
            except E.ConfigError as e:
                raise E.InvalidRequestError(f"{where}.{e}") from None
        out.append(M.ConfigEntry(str(k), str(v)))
    return out


class App:
    """Routes and the rules every request passes."""

    def __init__(self, auth: Authenticator, *, max_streams: int = 8) -> None:
        self.auth = auth
        self.max_streams = max_streams
        self.listener: HttpListener | None = None  # set by the listener
        self._rr = 0  # partition for records without key or partition (round robin per request)
        # topic -> (when, partitions, max_message_bytes), so that a stream of small produce
        # requests does not look the topic up each time (a third of such a request's cost). A
        # stale entry costs nothing unsafe: the PRODUCE handler checks the topic, the partition
        # and the batch size itself (a typed error), and the entry is forgotten on any error.
        self._shapes: dict[str, tuple[float, int, int]] = {}
        self.routes: list[tuple[str, re.Pattern[str], str, Route]] = []
        for method, template, fn in (
            ("GET", "/", self.console),
            ("GET", "/console/{file}", self.static),
            ("GET", "/openapi.json", self.openapi),
            ("GET", "/api/status", self.status),
            ("GET", "/api/topics", self.list_topics),
            ("POST", "/api/topics", self.create_topic),
            ("GET", "/api/topics/{topic}", self.describe_topic),
            ("PATCH", "/api/topics/{topic}", self.alter_topic),
            ("DELETE", "/api/topics/{topic}", self.delete_topic),
            ("GET", "/api/topics/{topic}/records", self.fetch),
            ("POST", "/api/topics/{topic}/records", self.produce),
            ("GET", "/api/topics/{topic}/tail", self.tail),
            ("GET", "/api/groups", self.list_groups),
            ("GET", "/api/groups/{group}", self.describe_group),
            ("POST", "/api/groups/{group}/reset", self.reset_group),
        ):
            pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "/?$")
            self.routes.append((method, pattern, template, fn))

    @property
    def stopping(self) -> bool:
        return self.listener is not None and self.listener.loop.stopping

    @property
    def streams(self) -> int:
        return self.listener.streams if self.listener is not None else 0

    # --- the rules ---------------------------------------------------------------------------------
    def handle(self, req: Request) -> Reply | Exchange:
        try:
            host = req.headers.get("host", "")
            if not self.auth.required and not is_loopback_host(host):
                # Without authentication only loopback names: a page on another site whose DNS
                # name was pointed at 127.0.0.1 (DNS rebinding) must not read the API.
                raise E.NotAuthenticatedError(f"Host {host!r} is not a loopback name, and this "
                                              "server asks for no authentication")
            try:
                req.conn.set_principal(self.auth.principal(req.headers.get("authorization")))
            except E.AuthenticationError as e:
                return error_reply(e, 401, [("www-authenticate", REALM)])
            check_origin(req.method, req.headers.get("origin"), host,
                         req.headers.get("sec-fetch-site"))
            return self.route(req)
        except E.EdgebusError as e:
            return error_reply(e)

    def route(self, req: Request) -> Reply | Exchange:
        path = req.path
        allowed = []
        for method, pattern, _, fn in self.routes:
            m = pattern.match(path)
            if m is None:
                continue
            if method == req.method or (method == "GET" and req.method == "HEAD"):
                args = {k: unquote(v) for k, v in m.groupdict().items()}
                return fn(req, **args)
            allowed.append(method)
        if allowed:
            return error_reply(E.InvalidRequestError(
                f"{req.method} is not allowed on {path} (allowed: {', '.join(allowed)})"), 405,
                [("allow", ", ".join(allowed))])
        return error_reply(E.InvalidRequestError(f"no such path {path!r}; see /openapi.json"), 404)

    # --- static ------------------------------------------------------------------------------------
    def console(self, req: Request) -> Reply:
        return self.static(req, "index.html")

    def static(self, req: Request, file: str) -> Reply:
        path = STATIC / file
        if "/" in file or file.startswith(".") or path.suffix not in _TYPES or not path.is_file():
            return error_reply(E.InvalidRequestError(f"no such console file {file!r}"), 404)
        return Reply(200, path.read_bytes(), [
            ("content-type", _TYPES[path.suffix]), ("cache-control", "no-cache"),
            ("content-security-policy", _CSP), ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer")])

    def openapi(self, req: Request) -> Reply:
        return json_reply(document())

    # --- status and topics -------------------------------------------------------------------------
    def status(self, req: Request) -> Exchange:
        resp = yield Call(M.Api.STATUS, M.Empty())
        doc = json.loads(bytes(resp.json))
        if self.listener is not None:
            doc["http"] = {**(doc.get("http") or {}), "connections": len(self.listener.conns),
                           "streams": self.streams}
        return json_reply(doc)

    def list_topics(self, req: Request) -> Exchange:
        resp = yield Call(M.Api.METADATA, M.MetadataRequest([]))
        return json_reply({"topics": [topic_doc(t) for t in resp.topics if not t.error_code]})

    def describe_topic(self, req: Request, topic: str) -> Exchange:
        resp = yield Call(M.Api.METADATA, M.MetadataRequest([topic]))
        return json_reply(topic_doc(one_topic(resp, topic)))

    def create_topic(self, req: Request) -> Exchange:
        doc = req.json()
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
            raise E.InvalidRequestError('the body must be {"name": ..., "partitions": n, "configs": {...}}')
        parts = doc.get("partitions", 0)
        if isinstance(parts, bool) or not isinstance(parts, int) or not 0 <= parts <= F.MAX_PARTITIONS:
            raise E.InvalidRequestError(f"partitions must be an integer from 1 to {F.MAX_PARTITIONS}")
        yield Call(M.Api.CREATE_TOPIC, M.CreateTopicRequest(
            doc["name"], parts, configs_of(doc.get("configs"), "configs")))
        resp = yield Call(M.Api.METADATA, M.MetadataRequest([doc["name"]]))
        return json_reply(topic_doc(one_topic(resp, doc["name"])), 201)

    def alter_topic(self, req: Request, topic: str) -> Exchange:
        doc = req.json()
        if not isinstance(doc, dict) or "configs" not in doc:
            raise E.InvalidRequestError('the body must be {"configs": {"retention_ms": "1d", ...}}')
        resp = yield Call(M.Api.ALTER_TOPIC_CONFIG,
                          M.AlterTopicConfigRequest(topic, configs_of(doc["configs"], "configs")))
        return json_reply({"name": topic, "configs": {c.name: c.value for c in resp.configs}})

    def delete_topic(self, req: Request, topic: str) -> Exchange:
        yield Call(M.Api.DELETE_TOPIC, M.DeleteTopicRequest(topic))
        return json_reply({"deleted": topic})

    # --- records -----------------------------------------------------------------------------------
    def produce(self, req: Request, topic: str) -> Exchange:
        recs = R.parse_produce(req.json())
        acks_name = req.query.get("acks", "written")
        if acks_name not in ("written", "durable"):
            raise E.InvalidRequestError(f"acks must be written or durable, got {acks_name!r}")
        acks = M.ACKS_BY_NAME[acks_name]
        shape = self._shapes.get(topic)
        if shape is not None and time.monotonic() - shape[0] <= SHAPE_TTL_S:
            try:
                return (yield from self._produce(topic, recs, acks, shape[1], shape[2]))
            except _NothingWritten:
                pass  # maybe the topic changed since it was looked up: once more, afresh
        meta = one_topic((yield Call(M.Api.METADATA, M.MetadataRequest([topic]))), topic)
        cfg = {c.name: c.value for c in meta.configs}
        if len(self._shapes) >= MAX_SHAPES:
            self._shapes.clear()
        shape = self._shapes[topic] = (time.monotonic(), len(meta.partitions),
                                       int(cfg.get("max_message_bytes", F.MAX_BATCH_BYTES)))
        try:
            return (yield from self._produce(topic, recs, acks, shape[1], shape[2]))
        except _NothingWritten as e:
            self._shapes.pop(topic, None)
            raise e.error from None

    def _produce(self, topic: str, recs: list[R.NewRecord], acks: int, n: int,
                 max_bytes: int) -> Exchange:
        """The records sent as one batch per partition (more when they exceed max_bytes), for a
        topic of `n` partitions; _NothingWritten when the first batch fails."""
        self._rr = (self._rr + 1) % n
        by_part: dict[int, list[int]] = {}
        for i, r in enumerate(recs):
            if r.partition is not None:
                if r.partition >= n:
                    raise _NothingWritten(E.UnknownPartitionError(
                        f"topic {topic!r} has {n} partitions; records[{i}].partition is {r.partition}"))
                p = r.partition
            else:
                p = R.partition_for_key(r.key, n) if r.key is not None else self._rr
            by_part.setdefault(p, []).append(i)
        offsets: list[dict[str, int]] = [{} for _ in recs]
        written = 0
        now = time.time_ns() // 1_000_000
        for p, idx in sorted(by_part.items()):
            for chunk in _chunks(idx, recs, max_bytes):
                batch = R.build([recs[i] for i in chunk], now)
                try:
                    resp = yield Call(M.Api.PRODUCE, M.ProduceRequest(topic, p, acks, batch))
                except E.EdgebusError as e:
                    self._shapes.pop(topic, None)
                    if not written and isinstance(e, _STALE_SHAPE):
                        raise _NothingWritten(e) from None  # refused before any append
                    raise type(e)(f"{e} (after {written} of {len(recs)} records were appended: "
                                  "see their offsets with GET .../records)") from None
                for j, i in enumerate(chunk):
                    offsets[i] = {"partition": p, "offset": resp.base_offset + j}
                written += len(chunk)
        return json_reply({"topic": topic, "offsets": offsets})

    def fetch(self, req: Request, topic: str) -> Exchange:
        partition = qint(req, "partition", 0, 0, F.MAX_PARTITIONS - 1)
        limit = qint(req, "limit", 100, 1, R.MAX_RECORDS_PER_ANSWER)
        wait = qint(req, "wait_ms", 0, 0, MAX_WAIT_MS)
        max_bytes = qint(req, "max_bytes", 1024 * 1024, 1, F.MAX_FETCH_RESPONSE_BYTES)
        b64 = _encoding(req)
        raw = req.query.get("offset", "earliest")
        if raw in ("earliest", "latest"):
            lo = yield Call(M.Api.LIST_OFFSETS, M.ListOffsetsRequest([M.ListOffsetsPartition(
                topic, partition, M.EARLIEST if raw == "earliest" else M.LATEST)]))
            listed = lo.partitions[0]
            if listed.error_code:
                raise E.error_for_code(listed.error_code, listed.error_message)
            offset = listed.offset
        else:
            offset = qint(req, "offset", 0, 0, 2**63 - 1)
        resp = yield Call(M.Api.FETCH, M.FetchRequest(wait, 1 if wait else 0, max_bytes, [
            M.FetchPartition(topic, partition, offset, max_bytes)]))
        fp = resp.partitions[0]
        if fp.error_code:
            raise E.error_for_code(fp.error_code, fp.error_message)
        recs = R.decode(fp.records, topic, partition, offset)[:limit]
        return json_reply({
            "topic": topic, "partition": partition,
            "records": [R.record_doc(r, b64) for r in recs],
            "next_offset": recs[-1].offset + 1 if recs else offset,
            "high_watermark": fp.high_watermark, "log_start_offset": fp.log_start_offset})

    def tail(self, req: Request, topic: str) -> Reply | Exchange:
        if self.streams >= self.max_streams:
            raise E.ServerBusyError(f"{self.streams} live tails are open, http.max_streams")
        return tail(self, req, topic, _encoding(req))

    # --- groups ------------------------------------------------------------------------------------
    def list_groups(self, req: Request) -> Exchange:
        resp = yield Call(M.Api.LIST_GROUPS, M.Empty())
        return json_reply({"groups": [{"group": g.group_id, "state": g.state, "assignor": g.assignor,
                                       "members": g.members} for g in resp.groups]})

    def describe_group(self, req: Request, group: str) -> Exchange:
        d = yield Call(M.Api.DESCRIBE_GROUP, G.DescribeGroupRequest(group))
        return json_reply({
            "group": d.group_id, "state": d.state, "generation": d.generation, "assignor": d.assignor,
            "members": [{"member_id": m.member_id, "client_id": m.client_id, "pid": m.pid,
                         "assignment": {a.topic: a.partitions for a in m.assignment}}
                        for m in d.members],
            "partitions": [{"topic": p.topic, "partition": p.partition, "committed": p.committed,
                            "log_end_offset": p.log_end_offset, "lag": p.lag, "member_id": p.member_id,
                            "commit_time": p.commit_time} for p in d.partitions],
            "lag": sum(max(p.lag, 0) for p in d.partitions)})

    def reset_group(self, req: Request, group: str) -> Exchange:
        doc = req.json()
        if not isinstance(doc, dict) or not isinstance(doc.get("topic"), str):
            raise E.InvalidRequestError('the body must be {"topic": ..., "to": "earliest"|"latest"|'
                                        '"offset"|"timestamp", "value": n, "partitions": [...], '
                                        '"dry_run": false}')
        to = doc.get("to", "earliest")
        if to not in RESET_TO:
            raise E.InvalidRequestError(f"to must be one of {', '.join(RESET_TO)}, got {to!r}")
        value = doc.get("value", 0)
        parts = doc.get("partitions", [])
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise E.InvalidRequestError("value must be a non-negative integer")
        if not isinstance(parts, list) or not all(type(p) is int and p >= 0 for p in parts):
            raise E.InvalidRequestError("partitions must be a list of partition numbers")
        resp = yield Call(M.Api.RESET_OFFSETS, G.ResetOffsetsRequest(
            group, doc["topic"], parts, RESET_TO[to], value, 1 if doc.get("dry_run") else 0))
        return json_reply({"group": group, "dry_run": bool(doc.get("dry_run")), "offsets": [
            {"topic": o.topic, "partition": o.partition, "previous": o.previous, "offset": o.offset}
            for o in resp.offsets]})


# Errors of a PRODUCE that a stale look-up of the topic explains (it was deleted and made
# again): refused before anything is appended, so the request is tried once more afresh.
_STALE_SHAPE = (E.UnknownTopicError, E.UnknownPartitionError, E.RecordTooLargeError)


class _NothingWritten(Exception):
    """A produce failed before any record was appended: it may be tried again."""

    def __init__(self, error: E.EdgebusError) -> None:
        super().__init__(str(error))
        self.error = error


def _encoding(req: Request) -> bool:
    enc = req.query.get("encoding", "auto")
    if enc not in ("auto", "base64"):
        raise E.InvalidRequestError(f"encoding must be auto or base64, got {enc!r}")
    return enc == "base64"


def _chunks(idx: list[int], recs: list[R.NewRecord], max_bytes: int) -> list[list[int]]:
    """The records of one partition cut into batches of at most the topic's max_message_bytes
    (a single record larger than that still gets its own batch, refused by the handler)."""
    out: list[list[int]] = [[]]
    size = F.BATCH_HEADER_SIZE
    for i in idx:
        r = recs[i]
        n = R.B.record_size(r.key, r.value, r.headers)
        if out[-1] and size + n > max_bytes:
            out.append([])
            size = F.BATCH_HEADER_SIZE
        out[-1].append(i)
        size += n
    return out
