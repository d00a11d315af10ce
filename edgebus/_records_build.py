"""cffi API-mode build of edgebus._records: the record-batch helpers of edgebus/records.c.
(Run by setup.py's cffi_modules at install time.)

Needs only a C compiler and Python's headers (Debian: gcc, python3-dev). The declarations below
are the whole interface Python sees (edgebus/records.py wraps them).
"""

from __future__ import annotations

import os
import runpy

CDEF = """
int64_t eb_encode_values(char *out, const char *vals, const uint32_t *lens, uint32_t n, int64_t ts);
#define EB_IDX_FIELDS ...
int64_t eb_index_records(const char *b, uint64_t length, uint32_t count, int64_t *out);
int64_t eb_check_records(const char *b, uint64_t length, uint32_t count);
#define EB_CHECK_FAILED ...
#define EB_CHECK_NO_CRC ...
int64_t eb_check_batch(const char *b, uint64_t n, uint64_t max_bytes, int compacted_ok);
int64_t eb_produce_frame(char *out, uint64_t cap, const char *prefix, uint32_t plen, const char *key,
                         int32_t klen, const char *val, int32_t vlen, int64_t ts, uint32_t corr,
                         uint16_t api);
#define EB_PLAN_FIELDS ...
int64_t eb_plan_records(const char *b, uint64_t length, uint32_t count, uint32_t skip, uint32_t chunk,
                        char *fmt, uint64_t cap, int64_t *plan);
#define EB_FMT_PER_RECORD ...
#define EB_FMT_KEYS ...
#define EB_FMT_VALUES ...
int64_t eb_format_records(const char *b, uint64_t length, uint64_t pos, uint32_t n, int flags,
                          char *fmt, uint64_t cap, uint64_t *next_pos);
#define EB_FETCHED_FIELDS ...
int64_t eb_plan_fetched(const char *b, uint64_t n, const char *want, uint64_t wlen,
                        int64_t min_offset, uint32_t max_records, char *fmt, uint64_t cap,
                        int64_t *out);
int64_t eb_kafka_to_edgebus(const char *recs, uint64_t n, uint32_t count, int64_t base_ts,
                            int64_t producer_id, int16_t producer_epoch, int32_t base_sequence,
                            char *out, uint64_t cap, uint64_t max_len, uint64_t *state);
#define EB_SEND_DECLINED ...
int64_t eb_sock_produce(int fd, char *buf, uint64_t cap, const char *prefix, uint32_t plen,
                        const char *key, int32_t klen, const char *val, int32_t vlen, int64_t ts,
                        uint32_t corr, uint16_t api, int check_unread);
int64_t eb_edgebus_to_kafka(const char *b, uint64_t length, uint32_t count, int64_t base_ts,
                            char *out, uint64_t cap);
"""

_HERE = os.path.dirname(os.path.abspath(__file__))
# Loaded by path, not imported: edgebus/_cbuild.py says why.
_C = runpy.run_path(os.path.join(_HERE, "_cbuild.py"))
# sock_send.c: a producer's one-call socket send. Without zlib's header eb_check_batch leaves the
# CRC to Python.
ffibuilder = _C["builder"]("edgebus._records", CDEF, _C["read_sources"](
    *(os.path.join(_HERE, f) for f in _C["RECORDS"]), os.path.join(_HERE, "sock_send.c")))

if __name__ == "__main__":  # a manual in-tree build: python edgebus/_records_build.py
    ffibuilder.compile(tmpdir=os.path.dirname(_HERE), verbose=True)
