"""docs/FORMAT.md and the code must agree: the tables are parsed and checked against the constants.

If a test here fails, either the document or the code is wrong; fix whichever is, never both at
random. The tables' column names are part of the contract with this file.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from edgebus import batch, errors, local_errors
from edgebus import format as F
from edgebus.protocol import codec as C
from edgebus.protocol import groups as G
from edgebus.protocol import messages as M
from edgebus.protocol import registry as AR
from edgebus.server.groups.offsets import OffsetKey, OffsetValue, OffsetValueEpoch

pytestmark = pytest.mark.unit

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

# Doc type name -> struct code.
STRUCT_CODE = {"i8": "b", "u8": "B", "i16": "h", "u16": "H", "i32": "i", "u32": "I", "i64": "q"}
LAYOUT_COLUMNS = ["offset", "size", "type", "field", "CRC", "meaning"]


# --- parsing -------------------------------------------------------------------------------------


def _sections(text: str) -> dict[str, list[str]]:
    """Heading text (without the #s) -> the lines under it, up to the next heading."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if not in_code and (m := re.match(r"^#{1,6}\s+(.*?)\s*$", line)):
            current = out.setdefault(m.group(1), [])
            continue
        if current is not None:
            current.append(line)
    return out


SECTIONS = _sections(DOC)


def section(title_part: str) -> list[str]:
    """The one section whose heading contains title_part."""
    found = [t for t in SECTIONS if title_part in t]
    assert len(found) == 1, f"expected one heading containing {title_part!r}, found {found}"
    return SECTIONS[found[0]]


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


Table = tuple[list[str], list[dict[str, str]]]  # (column names, rows keyed by column)


def tables(lines: list[str]) -> list[Table]:
    """Every markdown table in lines."""
    out: list[Table] = []
    i = 0
    while i < len(lines):
        is_table = lines[i].lstrip().startswith("|") and i + 1 < len(lines)
        if is_table and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            header = _cells(lines[i])
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                cells = _cells(lines[i])
                assert len(cells) == len(header), f"ragged table row: {lines[i]!r}"
                rows.append(dict(zip(header, cells, strict=True)))
                i += 1
            out.append((header, rows))
        else:
            i += 1
    return out


def table(title_part: str, index: int = 0) -> Table:
    """The index-th table in a section."""
    ts = tables(section(title_part))
    assert len(ts) > index, f"section {title_part!r} has no table #{index}"
    return ts[index]


def layout(title_part: str, index: int = 0) -> list[dict[str, str]]:
    """A byte-layout table: checks the columns, and that offsets are contiguous from 0."""
    cols, rows = table(title_part, index)
    assert cols == LAYOUT_COLUMNS, f"{title_part}: columns {cols}"
    pos = 0
    for row in rows:
        where = f"{title_part}: {row['field']} at {row['offset']}"
        assert int(row["offset"]) == pos, f"{where}, expected {pos}"
        if row["size"] == "-":  # the variable-size body at the end of a frame
            break
        typ = row["type"]
        assert typ in STRUCT_CODE, f"{title_part}: {row['field']} has unknown type {typ!r}"
        assert int(row["size"]) == struct.calcsize("<" + STRUCT_CODE[typ]), row
        pos += int(row["size"])
    return rows


def fixed(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["size"] != "-"]


def struct_format(rows: list[dict[str, str]]) -> str:
    return "<" + "".join(STRUCT_CODE[r["type"]] for r in fixed(rows))


# --- record batch --------------------------------------------------------------------------------


def test_batch_header_table_matches_format_constants() -> None:
    rows = layout("Batch header")
    assert struct_format(rows) == F.BATCH_HEADER.format
    assert sum(int(r["size"]) for r in rows) == F.BATCH_HEADER_SIZE == F.BATCH_HEADER.size
    for row in rows:
        const = "BATCH_" + row["field"].upper()
        assert getattr(F, const) == int(row["offset"]), f"{const} != doc offset {row['offset']}"


def test_every_batch_offset_constant_is_in_the_doc() -> None:
    documented = {"BATCH_" + r["field"].upper() for r in layout("Batch header")}
    not_offsets = {"BATCH_HEADER", "BATCH_HEADER_SIZE", "BATCH_PREFIX", "BATCH_PREFIX_SIZE",
                   "BATCH_BODY_HEADER", "BATCH_OUTSIDE_CRC", "BATCH_STAMP", "BATCH_SCAN", "BATCH_SCAN_SIZE"}
    constants = {n for n in dir(F) if n.startswith("BATCH_") and n not in not_offsets}
    assert constants == documented


def test_batch_header_crc_column() -> None:
    for row in layout("Batch header"):
        inside = int(row["offset"]) >= F.CRC_START
        assert row["CRC"] == ("yes" if inside else "no"), row["field"]
    outside = [r["field"] for r in layout("Batch header") if r["CRC"] == "no"]
    # The supervisor's stamped fields, and the framing fields the CRC cannot cover.
    assert outside == ["base_offset", "append_time", "length", "crc"]


def test_batch_prefix_and_body_header_are_slices_of_the_table() -> None:
    rows = layout("Batch header")
    prefix = [r for r in rows if int(r["offset"]) < F.BATCH_PREFIX_SIZE]
    body = [r for r in rows if int(r["offset"]) >= F.CRC_START]
    assert struct_format(prefix) == F.BATCH_PREFIX.format
    assert [r["field"] for r in prefix] == ["base_offset", "append_time", "length"]
    assert struct_format(body) == F.BATCH_BODY_HEADER.format
    magic = next(r for r in rows if r["field"] == "magic")
    assert f"must be `{F.MAGIC}`" in magic["meaning"]


def test_batch_stamp_outside_crc_and_scan_are_slices_of_the_table() -> None:
    rows = layout("Batch header")
    outside = [r for r in rows if r["CRC"] == "no"]
    assert struct_format(outside) == F.BATCH_OUTSIDE_CRC.format
    assert struct_format(outside[:2]) == F.BATCH_STAMP.format
    assert [r["field"] for r in outside[:2]] == ["base_offset", "append_time"]
    # BATCH_SCAN unpacks base_offset, length and record_count, skipping the fields between.
    assert F.BATCH_SCAN.unpack(F.BATCH_HEADER.pack(*range(1, 15))[: F.BATCH_SCAN_SIZE]) == (1, 3, 8)
    assert F.BATCH_SCAN_SIZE == F.BATCH_RECORD_COUNT + 4


def test_record_prefix_table_matches_format() -> None:
    rows = layout("2.2 Record")
    assert struct_format(rows) == F.RECORD_PREFIX.format
    assert sum(int(r["size"]) for r in rows) == F.RECORD_PREFIX_SIZE
    assert {r["CRC"] for r in rows} == {"yes"}
    assert [r["field"] for r in rows] == ["record_length", "timestamp", "key_length"]


def test_record_tail_and_header_tables_name_their_types() -> None:
    _, tail = table("2.2 Record", 1)
    assert [r["field"] for r in tail] == ["key", "value_length", "value", "header_count", "headers"]
    assert {r["field"]: r["type"] for r in tail}["value_length"] == "i32"
    assert {r["field"]: r["type"] for r in tail}["header_count"] == "u16"
    assert F.HEADER_KEY_LEN is F.U16
    _, header = table("2.3 Record header")
    assert [(r["field"], r["type"]) for r in header] == [
        ("key_length", "u16"), ("key", "UTF-8"), ("value_length", "i32"), ("value", "bytes")
    ]


def test_example_batch_is_byte_exact() -> None:
    m = re.search(r"```hex\n(.*?)```", DOC, re.S)
    assert m, "the example hex block is missing"
    hexdigits = "".join(line.split("#")[0] for line in m.group(1).splitlines())
    doc_bytes = bytes.fromhex(hexdigits)
    rec = batch.encode_record(1700000000000, b"k", b"v", [("h", b"1")])
    built = bytearray(batch.build_batch([rec], 1700000000000, 1700000000000))
    batch.stamp_batch(built, 42, 1700000000123)
    assert doc_bytes == bytes(built)


# --- index entries and frames --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "entry", "fields"),
    [
        ("Offset index entry", F.OFFSET_INDEX_ENTRY, ["relative_offset", "position"]),
        ("Time index entry", F.TIME_INDEX_ENTRY, ["timestamp", "relative_offset"]),
    ],
)
def test_index_entry_tables(title: str, entry: struct.Struct, fields: list[str]) -> None:
    rows = layout(title)
    assert struct_format(rows) == entry.format
    assert sum(int(r["size"]) for r in rows) == entry.size
    assert [r["field"] for r in rows] == fields
    assert {r["CRC"] for r in rows} == {"-"}


def test_segment_file_names_are_documented() -> None:
    for suffix in (".log", ".index", ".timeindex"):
        assert f"<base_offset:020d>{suffix}" in DOC
    assert "<topic>-<partition>/" in DOC
    assert f"{0:020d}.log" in DOC


@pytest.mark.parametrize(
    ("title", "header", "fields"),
    [
        ("Request frame", F.REQUEST_HEADER, ["length", "api_key", "api_version", "correlation_id"]),
        ("Response frame", F.RESPONSE_HEADER, ["length", "correlation_id", "error_code"]),
    ],
)
def test_frame_tables(title: str, header: struct.Struct, fields: list[str]) -> None:
    rows = layout(title)
    assert struct_format(rows) == header.format
    assert [r["field"] for r in fixed(rows)] == fields
    body = rows[-1]
    assert body["field"] == "body" and int(body["offset"]) == header.size
    assert F.FRAME_LENGTH.format == "<" + STRUCT_CODE[rows[0]["type"]]


def test_frame_header_sizes() -> None:
    assert int(layout("Request frame")[-1]["offset"]) == F.REQUEST_HEADER_SIZE
    assert int(layout("Response frame")[-1]["offset"]) == F.RESPONSE_HEADER_SIZE
    for title, rest, least in [("Request frame", F.REQUEST_HEADER_REST, F.REQUEST_MIN_LENGTH),
                               ("Response frame", F.RESPONSE_HEADER_REST, F.RESPONSE_MIN_LENGTH)]:
        rows = fixed(layout(title))
        assert struct_format(rows[1:]) == rest.format  # the header after the length field
        assert int(rows[0]["size"]) == F.FRAME_LENGTH_SIZE
        assert rest.size == least and f"At least {least}" in rows[0]["meaning"]


def test_record_minimum_size() -> None:
    assert F.RECORD_MIN_SIZE == 22 and "takes at least 22 bytes" in DOC
    assert F.RECORD_PREFIX_NO_KEY.format == F.RECORD_PREFIX.format + "i"


# --- limits --------------------------------------------------------------------------------------


def _expand_chars(spec: str) -> frozenset[str]:
    chars: set[str] = set()
    for tok in spec.strip("`").split():
        if len(tok) == 3 and tok[1] == "-":
            chars.update(chr(c) for c in range(ord(tok[0]), ord(tok[2]) + 1))
        else:
            assert len(tok) == 1, tok
            chars.add(tok)
    return frozenset(chars)


def test_limits_table_matches_constants() -> None:
    cols, rows = table("3. Limits")
    assert cols == ["constant", "value", "reason", "when exceeded"]
    by_name = {r["constant"].strip("`"): r for r in rows}
    limits = [n for n in dir(F) if n.startswith("MAX_")] + ["TOPIC_NAME_CHARS"]
    for name in limits:
        assert name in by_name, f"limit {name} is not documented"
        assert by_name[name]["reason"], f"limit {name} has no reason"
        assert by_name[name]["when exceeded"], f"limit {name} does not say what happens"
    for name in limits:
        if name == "TOPIC_NAME_CHARS":
            assert _expand_chars(by_name[name]["value"]) == F.TOPIC_NAME_CHARS
        else:
            assert int(by_name[name]["value"].split()[0]) == getattr(F, name), name


def test_group_limits_table_matches_constants() -> None:
    cols, rows = table("3. Limits", 1)
    assert cols == ["constant", "value", "reason", "when exceeded"]
    by_name = {r["constant"].strip("`"): r for r in rows}
    limits = {n for n in dir(G) if n.startswith(("MAX_", "MIN_"))}
    assert set(by_name) == limits
    for name in limits:
        assert int(by_name[name]["value"].split()[0]) == getattr(G, name), name
        assert by_name[name]["reason"] and by_name[name]["when exceeded"], name


# --- protocol ------------------------------------------------------------------------------------


def wire_name(t: object) -> str:
    """The doc's name for a codec type."""
    if isinstance(t, C.Int):
        return {v: k for k, v in STRUCT_CODE.items()}[t.s.format[-1]]
    if t is C.STR:
        return "str"
    if t is C.BYTES:
        return "bytes"
    if isinstance(t, C.Array):
        return "array of " + wire_name(t.item)
    assert isinstance(t, type) and issubclass(t, C.Message), t
    return t.__name__


def test_wire_types_table() -> None:
    cols, rows = table("7.3 Wire types")
    assert cols == ["type", "size", "encoding"]
    by_type = {r["type"]: r for r in rows}
    for t in (C.I8, C.I16, C.I32, C.I64, C.U8, C.U16, C.U32):
        assert int(by_type[wire_name(t)]["size"]) == t.s.size
    assert "u16" in by_type["str"]["encoding"] and "UTF-8" in by_type["str"]["encoding"]
    assert "i32" in by_type["bytes"]["encoding"] and "-1" in by_type["bytes"]["encoding"]
    assert "i32" in by_type["array of T"]["encoding"]


def message_classes() -> list[type[C.Message]]:
    """Every message class reachable from the API tables (groups included), nested structs too."""
    seen: list[type[C.Message]] = []

    def walk(cls: type[C.Message]) -> None:
        if cls in seen:
            return
        seen.append(cls)
        for _name, typ in cls.FIELDS:
            while isinstance(typ, C.Array):
                typ = typ.item
            if isinstance(typ, type) and issubclass(typ, C.Message):
                walk(typ)

    for cls in [*AR.REQUESTS.values(), *AR.RESPONSES.values(), M.ErrorBody]:
        walk(cls)
    return seen


def test_api_table_lists_every_api() -> None:
    cols, rows = table("7.4 APIs")
    assert cols == ["key", "api", "versions", "request", "response"]
    by_key = {int(r["key"]): r for r in rows}
    assert sorted(by_key) == sorted(int(a) for a in M.Api)
    for api in M.Api:
        row = by_key[int(api)]
        assert row["api"] == api.name
        if api in AR.REQUESTS:
            lo, hi = AR.VERSIONS[api]
            assert row["versions"] == f"{lo}-{hi}", api.name
            # Version 0's bodies first; a later version's bodies named after it, "(vN: Name".
            assert row["request"].split(" (")[0] == AR.REQUESTS[api].__name__, api.name
            assert row["response"].split(" (")[0] == AR.RESPONSES[api].__name__, api.name
            for v in range(max(lo, 1), hi + 1):
                req, resp = AR.BODIES[(int(api), v)]
                assert f"v{v}: {req.__name__}" in row["request"], (api.name, v)
                assert f"v{v}: {resp.__name__}" in row["response"], (api.name, v)
        else:
            assert row["versions"] == row["request"] == row["response"] == "-", api.name


def _run_format(cls: type[C.Message], first: str, last: str) -> str:
    """The struct format of cls's fixed-size fields first..last (an array stands for its count)."""
    names = [n for n, _ in cls.FIELDS]
    codes = []
    for _name, t in cls.FIELDS[names.index(first) : names.index(last) + 1]:
        if isinstance(t, C.Int):
            codes.append(t.s.format[-1])
        elif isinstance(t, C.Array) or t is C.BYTES:
            codes.append(F.ARRAY_COUNT.format[-1] if isinstance(t, C.Array) else F.BYTES_LENGTH.format[-1])
        elif t is C.STR:
            codes.append(F.STR_LENGTH.format[-1])
        else:
            raise AssertionError(t)
    return "<" + "".join(codes)


@pytest.mark.parametrize(("run", "cls", "first", "last"), [
    (F.PRODUCE_REQUEST_RUN, M.ProduceRequest, "partition", "batch"),
    (F.PRODUCE_RESPONSE_RUN, M.ProduceResponse, "partition", "log_start_offset"),
    (F.FETCH_REQUEST_RUN, M.FetchRequest, "max_wait_ms", "partitions"),
    (F.FETCH_PARTITION_RUN, M.FetchPartition, "partition", "max_bytes"),
    (F.FETCHED_PARTITION_HEAD, M.FetchedPartition, "partition", "error_message"),
    (F.FETCHED_PARTITION_TAIL, M.FetchedPartition, "high_watermark", "records"),
], ids=lambda v: v.format if isinstance(v, struct.Struct) else getattr(v, "__name__", None) or str(v))
def test_fast_path_runs_are_slices_of_their_messages(run: struct.Struct, cls: type[C.Message], first: str,
                                                     last: str) -> None:
    """The data plane's fixed runs (format.py, used by edgebus/fastpath) are the documented fields."""
    assert run.format == _run_format(cls, first, last)
    rows = table(f"`{cls.__name__}`")[1]
    assert [r["field"] for r in rows] == [n for n, _ in cls.FIELDS]


def test_fast_path_offsets() -> None:
    assert F.FETCHED_PARTITION_RUN.format == F.FETCHED_PARTITION_HEAD.format + F.FETCHED_PARTITION_TAIL.format[1:]
    assert struct.calcsize("<i") == F.FETCH_REQUEST_MIN_BYTES  # after max_wait_ms
    assert struct.calcsize("<i") == F.FETCH_PARTITION_OFFSET  # after partition
    assert (F.STR_LENGTH.format, F.BYTES_LENGTH.format, F.ARRAY_COUNT.format) == ("<H", "<i", "<i")


@pytest.mark.parametrize("cls", message_classes(), ids=lambda c: c.__name__)
def test_message_body_table(cls: type[C.Message]) -> None:
    cols, rows = table(f"`{cls.__name__}`")
    assert cols == ["field", "type", "meaning"]
    assert [(r["field"], r["type"]) for r in rows] == [(n, wire_name(t)) for n, t in cls.FIELDS]
    assert all(r["meaning"] for r in rows), cls.__name__


def test_special_values() -> None:
    cols, rows = table("Special values")
    assert cols == ["name", "value", "where", "meaning"]
    by_name = {r["name"].strip("`"): int(r["value"]) for r in rows}
    group_values = [n for n in dir(G) if n.startswith(("NO_", "RESET_"))]
    assert by_name == {
        "LATEST": M.LATEST, "EARLIEST": M.EARLIEST,
        "ACKS_NONE": M.ACKS_NONE, "ACKS_WRITTEN": M.ACKS_WRITTEN, "ACKS_DURABLE": M.ACKS_DURABLE,
        **{n: getattr(G, n) for n in group_values},
    }
    for name, value in M.ACKS_BY_NAME.items():
        assert f'acks="{name}"' in next(r for r in rows if int(r["value"]) == value
                                        and r["name"].startswith("`ACKS"))["meaning"]


# --- errors --------------------------------------------------------------------------------------


def error_classes() -> list[type[errors.EdgebusError]]:
    out: list[type[errors.EdgebusError]] = []
    todo = [errors.EdgebusError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            # edgebus's own, not a bridge's subclass (the local ones live in local_errors.py)
            if sub.__module__ in (errors.__name__, local_errors.__name__) and sub not in out:
                out.append(sub)
                todo.append(sub)
    return out


def test_error_table_matches_error_tree() -> None:
    cols, rows = table("8. Error codes")
    assert cols == ["code", "name", "retriable", "wire", "meaning"]
    by_code = {int(r["code"]): r for r in rows}
    assert len(by_code) == len(rows), "duplicate code in the table"
    classes = error_classes()
    assert {c.code for c in classes} | {errors.NO_ERROR} == set(by_code)
    for cls in classes:
        row = by_code[cls.code]
        assert row["name"] == cls.__name__
        assert row["retriable"] == ("yes" if cls.retriable else "no"), cls.__name__
        assert row["wire"] == ("yes" if cls.code < 100 else "no"), cls.__name__
        assert row["meaning"], cls.__name__
        assert errors.error_for_code(cls.code).__class__ is cls


def test_recovery_checkpoint_section_exists() -> None:
    assert any("Recovery checkpoint file" in t for t in SECTIONS)


# --- shared-memory ring header (section 6) -------------------------------------------------------

RING_TYPES = {**STRUCT_CODE, "u64": "Q"}


def ring_rows() -> list[dict[str, str]]:
    """The ring header table: contiguous from 0; `pad` rows are reserved zero bytes."""
    cols, rows = table("6.2 Ring header")
    assert cols == LAYOUT_COLUMNS
    pos = 0
    for row in rows:
        assert int(row["offset"]) == pos, f"ring header: {row['field']} at {row['offset']}, expected {pos}"
        if row["type"] != "pad":
            assert int(row["size"]) == struct.calcsize("<" + RING_TYPES[row["type"]]), row
        pos += int(row["size"])
        assert row["CRC"] == "-", row["field"]
    return rows


def test_ring_header_table_matches_format_constants() -> None:
    rows = ring_rows()
    assert sum(int(r["size"]) for r in rows) == F.RING_HEADER_SIZE
    for row in rows:
        const = "RING_" + row["field"].upper()
        assert getattr(F, const) == int(row["offset"]), f"{const} != doc offset {row['offset']}"
    # Every RING_ offset constant is a documented field, in the document's order.
    not_offsets = {"RING_HEADER_SIZE", "RING_MAGIC_VALUE", "RING_FORMAT_VERSION", "RING_ALIGN",
                   "RING_PAD_MARKER", "RING_HEADER"}
    constants = sorted((getattr(F, n), n) for n in dir(F) if n.startswith("RING_") and n not in not_offsets)
    assert [n for _, n in constants] == ["RING_" + r["field"].upper() for r in rows]
    fixed_rows = [r for r in rows if int(r["offset"]) < F.RING_RESERVED]
    assert F.RING_HEADER.format == "<" + "".join(RING_TYPES[r["type"]] for r in fixed_rows)


def test_ring_counters_are_on_separate_cache_lines() -> None:
    line = 128
    assert F.RING_HEAD // line != F.RING_TAIL // line
    assert F.RING_HEAD // line == F.RING_WRITER_WAITING // line  # each flag beside its owner's counter
    assert F.RING_TAIL // line == F.RING_READER_WAITING // line
    assert F.RING_HEAD % 8 == 0 and F.RING_TAIL % 8 == 0  # naturally aligned for atomics


def test_ring_doc_values_and_c_module_agree() -> None:
    lines = "\n".join(section("6.2 Ring header"))
    assert f"`0x{F.RING_MAGIC_VALUE:08X}`" in lines
    assert "0xFFFFFFFF" in "\n".join(section("6.3 Entries")) and F.RING_PAD_MARKER == 0xFFFFFFFF
    assert F.RING_MAGIC_VALUE.to_bytes(4, "little") == b"EBRG"
    from edgebus.shm._ring import lib  # built by setup.py (cffi) at install

    assert lib.EB_RING_MAGIC == F.RING_MAGIC_VALUE
    assert lib.EB_RING_VERSION == F.RING_FORMAT_VERSION
    assert lib.EB_HEADER_SIZE == F.RING_HEADER_SIZE
    assert lib.EB_PAD_MARKER == F.RING_PAD_MARKER
    assert lib.EB_ALIGN == F.RING_ALIGN
    for c_name, py in [("MAGIC", F.RING_MAGIC), ("VERSION", F.RING_VERSION),
                       ("HEADER_SIZE", F.RING_HEADER_BYTES), ("CAPACITY", F.RING_CAPACITY),
                       ("MAX_FRAME", F.RING_MAX_FRAME), ("HEAD", F.RING_HEAD),
                       ("WRITER_WAITING", F.RING_WRITER_WAITING), ("TAIL", F.RING_TAIL),
                       ("READER_WAITING", F.RING_READER_WAITING)]:
        assert getattr(lib, "EB_OFF_" + c_name) == py, c_name


def test_ring_limits() -> None:
    assert F.MAX_RING_BYTES // 2 > F.MAX_FRAME_BYTES  # the largest frame fits a largest ring
    assert F.MIN_RING_BYTES & (F.MIN_RING_BYTES - 1) == 0
    assert F.MAX_RING_BYTES & (F.MAX_RING_BYTES - 1) == 0
    assert "`MIN_RING_BYTES` (4096" in "\n".join(section("3. Limits"))


# --- Kafka record batches (section 9) ------------------------------------------------------------


def test_kafka_batch_header_table_matches_the_listener() -> None:
    from edgebus.server.kafka import records as KR

    rows = layout("9.1 Kafka batch header")
    assert ">" + struct_format(rows)[1:] == KR.KAFKA_HEADER.format  # big-endian, as in Kafka
    assert sum(int(r["size"]) for r in rows) == KR.KAFKA_HEADER_SIZE == 61
    at = {r["field"]: int(r["offset"]) for r in rows}
    assert at["attributes"] == KR._CRC_START  # the CRC-32C covers attributes .. the end
    assert at["crc"] == KR._CRC_AT
    assert at["partition_leader_epoch"] == KR._LENGTH_END  # batch_length counts from here
    covered = [r["field"] for r in rows if r["CRC"] == "yes"]
    assert covered == [r["field"] for r in rows if int(r["offset"]) >= KR._CRC_START]


def test_transaction_marker_table_matches_the_coordinator() -> None:
    from edgebus.server.txn import coordinator as TC

    cols, rows = table("9.4 Transactions")
    assert cols[:2] == ["part", "bytes (big-endian, as in Kafka)"]
    doc = {r["part"]: r[cols[1]].replace("`", "").replace(" ", "") for r in rows}
    for t, name in ((TC.CONTROL_ABORT, "abort"), (TC.CONTROL_COMMIT, "commit")):
        assert f"{t} = {name}" in next(r["meaning"] for r in rows if r["part"] == "key")
        assert bytes.fromhex(doc["key"].replace("T", str(t))) == TC._CONTROL_KEY.pack(0, t)
    assert bytes.fromhex(doc["value"]) == TC._CONTROL_VALUE.pack(0, 0)


@pytest.mark.parametrize("cls", [OffsetKey, OffsetValue, OffsetValueEpoch], ids=lambda c: c.__name__)
def test_committed_offset_record_tables(cls: type[C.Message]) -> None:
    """Section 4.4: the key and both value versions of `__consumer_offsets` records."""
    cols, rows = table(f"`{cls.__name__}`")
    assert cols == ["field", "type", "meaning"]
    assert [(r["field"], r["type"]) for r in rows] == [(n, wire_name(t)) for n, t in cls.FIELDS]
