"""Byte layouts, mirrored from docs/FORMAT.md in the same order. All integers are little-endian.

tests/test_format_doc.py checks that every offset and size here agrees with the document.
"""

from __future__ import annotations

import struct

# --- Record batch header (64 bytes) --------------------------------------------------------------
# Fields before CRC_START are outside the CRC: the supervisor stamps base_offset and append_time
# after validating the producer's bytes, so the CRC the producer computed stays valid on disk.
BATCH_BASE_OFFSET = 0  # i64, stamped by the supervisor
BATCH_APPEND_TIME = 8  # i64 ms, stamped by the supervisor, never decreasing within a partition
BATCH_LENGTH = 16  # u32, whole batch including this header
BATCH_CRC = 20  # u32, zlib.crc32 of bytes [CRC_START, length)
BATCH_MAGIC = 24  # u8
BATCH_ATTRIBUTES = 25  # u8, bits 0-2 compression (0 = none), bit 3 compacted away, 4 transactional, 5 control, others 0
ATTR_CODEC_MASK = 0x07  # compression codec bits; must be 0 (none)
# A "compacted-away" batch: a header with no records that stands for record_count offsets the
# log cleaner removed, so offsets stay dense in every file (docs/FORMAT.md 2.1, 4.8).
ATTR_COMPACTED = 0x08
# Kafka transactions (docs/FORMAT.md 9.4): a batch written inside a transaction, and a control
# batch (one Kafka end-transaction marker record); the same bits as in Kafka's attributes.
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20
BATCH_RESERVED = 26  # u16, 0
BATCH_RECORD_COUNT = 28  # u32, >= 1
BATCH_FIRST_TIMESTAMP = 32  # i64 ms, producer's create time of the first record
BATCH_MAX_TIMESTAMP = 40  # i64 ms, max create time in the batch
BATCH_PRODUCER_ID = 48  # i64, -1 = none (reserved for idempotence)
BATCH_BASE_SEQUENCE = 56  # i32, -1 = none (reserved for idempotence)
BATCH_PRODUCER_EPOCH = 60  # i16, -1 = none (reserved for idempotence)
BATCH_RESERVED2 = 62  # u16, 0
BATCH_HEADER_SIZE = 64
CRC_START = BATCH_MAGIC
MAGIC = 1

BATCH_HEADER = struct.Struct("<qqIIBBHIqqqihH")
assert BATCH_HEADER.size == BATCH_HEADER_SIZE
# The prefix every scan reads first: base_offset, append_time, length.
BATCH_PREFIX = struct.Struct("<qqI")
BATCH_PREFIX_SIZE = BATCH_PREFIX.size  # 20
# The part the producer fills (magic .. reserved2), packed after the CRC.
BATCH_BODY_HEADER = struct.Struct("<BBHIqqqihH")
# The fields before CRC_START (base_offset, append_time, length, crc): what build_batch packs last.
BATCH_OUTSIDE_CRC = struct.Struct("<qqII")
assert BATCH_OUTSIDE_CRC.size == CRC_START
# The supervisor's stamp (base_offset, append_time), written in place after validation.
BATCH_STAMP = struct.Struct("<qq")
assert BATCH_STAMP.size == BATCH_LENGTH
# What a scan from batch to batch needs: base_offset, length, record_count (fields 0, 2 and 7).
BATCH_SCAN = struct.Struct(f"<q{BATCH_LENGTH - 8}xI{BATCH_RECORD_COUNT - BATCH_CRC}xI")
BATCH_SCAN_SIZE = BATCH_SCAN.size  # 32: the header up to and including record_count
assert BATCH_SCAN_SIZE == BATCH_RECORD_COUNT + 4

# --- Record (inside a batch, after the header) ---------------------------------------------------
RECORD_PREFIX = struct.Struct("<Iqi")  # record_length (bytes after this field), timestamp, key_len
RECORD_PREFIX_SIZE = RECORD_PREFIX.size  # 16
I32 = struct.Struct("<i")
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
HEADER_KEY_LEN = U16
NULL_LENGTH = -1
RECORD_LENGTH_SIZE = 4  # the u32 record_length itself, not counted in its value
# A record with a null key: the prefix and value_length packed at once (the producer's common record).
RECORD_PREFIX_NO_KEY = struct.Struct("<Iqii")
# The smallest record (null key, null value, no headers): prefix, value_length, header_count.
RECORD_MIN_SIZE = RECORD_PREFIX_SIZE + I32.size + U16.size  # 22

# --- Offset index entry (8 bytes) ----------------------------------------------------------------
OFFSET_INDEX_ENTRY = struct.Struct("<II")  # relative_offset, file position of the batch
# --- Time index entry (12 bytes) -----------------------------------------------------------------
TIME_INDEX_ENTRY = struct.Struct("<qI")  # append_time_ms, relative_offset of the batch
# --- Replica gap record (32 bytes; docs/FORMAT.md 4.9) --------------------------------------------
# start, end (exclusive), recorded_ms, reason, reserved, reserved2, crc of the 28 bytes before it
REPLICA_GAP_ENTRY = struct.Struct("<qqqBBHI")

# --- Shared-memory ring header (384 bytes, then the data area) ------------------------------------
# One ring per direction per client, both in one memfd (docs/FORMAT.md section 6). head and tail
# are on separate cache lines (128 bytes apart: 64-byte lines plus the adjacent-line prefetcher),
# each next to the waiting flag its owner sets. Counters are published only by edgebus.shm's C
# code with one atomic store each, never with struct.pack_into (which zeroes before writing).
RING_MAGIC = 0  # u32 RING_MAGIC_VALUE, written once by the supervisor before the memfd is shared
RING_VERSION = 4  # u16 RING_FORMAT_VERSION
RING_HEADER_BYTES = 6  # u16 RING_HEADER_SIZE
RING_CAPACITY = 8  # u32 data-area bytes, a power of two
RING_MAX_FRAME = 12  # u32 largest entry (frame with its length prefix), at most capacity / 2
RING_RESERVED = 16  # 112 bytes, 0
RING_HEAD = 128  # u64 bytes ever written; stored by the writer only (release)
RING_WRITER_WAITING = 136  # u32 1 = the writer sleeps until space is freed; set by the writer
RING_RESERVED2 = 140  # 116 bytes, 0
RING_TAIL = 256  # u64 bytes ever consumed; stored by the reader only (release)
RING_READER_WAITING = 264  # u32 1 = the reader sleeps until data arrives; set by the reader
RING_RESERVED3 = 268  # 116 bytes, 0
RING_HEADER_SIZE = 384
RING_MAGIC_VALUE = 0x47524245  # b"EBRG" read as a little-endian u32
RING_FORMAT_VERSION = 1
RING_ALIGN = 8  # every entry starts 8-byte aligned
RING_PAD_MARKER = 0xFFFFFFFF  # an entry length that means "skip to the start of the data area"
# The fixed fields before the first reserved gap, for tests and tools that read a header.
RING_HEADER = struct.Struct("<IHHII")
# A ring smaller than this is not worth a mapping (and a page is the mapping granule anyway).
MIN_RING_BYTES = 4096
# Data-area bytes of one ring: bounds the shared memory one client costs the supervisor; large
# enough that a ring's max frame (capacity / 2) exceeds MAX_FRAME_BYTES.
MAX_RING_BYTES = 64 * 1024 * 1024

# --- Socket frames -------------------------------------------------------------------------------
# Request:  length u32 | api_key u16 | api_version u16 | correlation_id u32 | body
# Response: length u32 | correlation_id u32 | error_code i16 | body
# length counts the bytes after the length field.
FRAME_LENGTH = struct.Struct("<I")
FRAME_LENGTH_SIZE = FRAME_LENGTH.size  # 4
REQUEST_HEADER = struct.Struct("<IHHI")
RESPONSE_HEADER = struct.Struct("<IIh")
REQUEST_HEADER_SIZE = REQUEST_HEADER.size  # 12
RESPONSE_HEADER_SIZE = RESPONSE_HEADER.size  # 10
# The headers after the length field (what a frame split off its length starts with); their
# sizes are the smallest length a frame may give (8 for requests, 6 for responses).
REQUEST_HEADER_REST = struct.Struct("<HHI")  # api_key, api_version, correlation_id
RESPONSE_HEADER_REST = struct.Struct("<Ih")  # correlation_id, error_code
REQUEST_MIN_LENGTH = REQUEST_HEADER_REST.size  # 8
RESPONSE_MIN_LENGTH = RESPONSE_HEADER_REST.size  # 6
assert REQUEST_HEADER_SIZE == FRAME_LENGTH_SIZE + REQUEST_MIN_LENGTH
assert RESPONSE_HEADER_SIZE == FRAME_LENGTH_SIZE + RESPONSE_MIN_LENGTH

# --- Wire types and the data plane's fixed runs (docs/FORMAT.md 7.3, 7.6) ------------------------
# Length prefixes of the variable-length wire types.
STR_LENGTH = U16  # str: u16 byte length, then UTF-8
BYTES_LENGTH = I32  # bytes: i32 byte length (-1 = null), then the bytes
ARRAY_COUNT = I32  # array: i32 element count, then the elements
# The struct-level PRODUCE/FETCH codecs (edgebus/fastpath) read and write the fields between two
# variable-length ones with one Struct each. Every run is a slice of its message's table in
# section 7.6 (tests/test_format_doc.py checks them against the messages' FIELDS).
PRODUCE_REQUEST_RUN = struct.Struct("<ibi")  # ProduceRequest after topic: partition, acks, batch length
PRODUCE_RESPONSE_RUN = struct.Struct("<iqqq")  # ProduceResponse after topic: partition .. log_start_offset
FETCH_REQUEST_RUN = struct.Struct("<iiii")  # FetchRequest: max_wait_ms, min_bytes, max_bytes, partition count
FETCH_REQUEST_MIN_BYTES = 4  # offset of min_bytes: a FETCH body's bytes after max_wait_ms
FETCH_PARTITION_RUN = struct.Struct("<iqi")  # FetchPartition after topic: partition, offset, max_bytes
FETCH_PARTITION_OFFSET = 4  # offset of `offset` in FETCH_PARTITION_RUN
# FetchedPartition after topic: partition, error_code, error_message length | message | then
# high_watermark, log_start_offset, records length; with an empty message, all in one run.
FETCHED_PARTITION_HEAD = struct.Struct("<ihH")
FETCHED_PARTITION_TAIL = struct.Struct("<qqi")
FETCHED_PARTITION_RUN = struct.Struct("<ihHqqi")
assert FETCHED_PARTITION_RUN.size == FETCHED_PARTITION_HEAD.size + FETCHED_PARTITION_TAIL.size

# --- Kafka's layouts (FORMAT.md 9), converted at the Kafka listener's edge ----------------------
# Kafka's, not edgebus's: declared here so that every byte layout edgebus reads or writes is in one
# place; tests/test_format_doc.py checks them against FORMAT.md 9.1 and 9.4.
KAFKA_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")  # v2 record batch header, big-endian (9.1)
KAFKA_CONTROL_KEY = struct.Struct(">hh")  # a control record's key: version 0, type (9.4)
KAFKA_CONTROL_VALUE = struct.Struct(">hi")  # its value: version 0, coordinator epoch (9.4)

# --- Limits (each with its reason) ---------------------------------------------------------------
# One batch is held in memory whole on both sides; 16 MiB bounds a client's cost to the supervisor.
MAX_BATCH_BYTES = 16 * 1024 * 1024
# A frame carries at most one batch plus its small envelope.
MAX_FRAME_BYTES = MAX_BATCH_BYTES + 64 * 1024
# Record bytes in one fetch response (plus at most one oversized first batch): keeps every response
# inside the client's frame limit whatever max_bytes it asked for.
MAX_FETCH_RESPONSE_BYTES = MAX_BATCH_BYTES
# Topic names become directory names: keep them short and filesystem-safe.
MAX_TOPIC_NAME = 200
TOPIC_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
MAX_PARTITIONS = 1024
MAX_HEADERS_PER_RECORD = 1024
# Bytes a connection may queue for sending before the supervisor stops reading its requests.
MAX_OUTPUT_BUFFER = 64 * 1024 * 1024
# Bytes queued for all connections together before fetches are refused: the supervisor's memory
# for answers must not grow with the number of clients that stop reading.
MAX_OUTPUT_TOTAL = 256 * 1024 * 1024
# The correlation id of the one frame a refused connection gets (an error, then EOF); clients
# never use it for a request other than SHM_ATTACH, which is always a connection's first.
REFUSAL_CORRELATION_ID = 0
