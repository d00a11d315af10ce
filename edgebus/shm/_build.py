"""cffi API-mode build of edgebus.shm._ring: the shared-memory ring (the record-batch helpers are
edgebus._records, built by edgebus/_records_build.py).
(Run by setup.py's cffi_modules at install time.)

Needs only a C compiler and Python's headers (Debian: gcc, python3-dev). The C sources are
ring.c and take.c beside this file (take.c: a consumer's one-call wait for its next response),
then edgebus/records.c and produce.c (a producer's one-record send written straight into its
request ring: the frame builder of records.c, the writer of ring.c; zlib for the CRC when its
header is there, edgebus/_cbuild.py); the declarations below are the whole interface
Python sees.
"""

from __future__ import annotations

import os
import runpy

CDEF = """
#define EB_RING_MAGIC ...
#define EB_RING_VERSION ...
#define EB_OFF_MAGIC ...
#define EB_OFF_VERSION ...
#define EB_OFF_HEADER_SIZE ...
#define EB_OFF_CAPACITY ...
#define EB_OFF_MAX_FRAME ...
#define EB_OFF_HEAD ...
#define EB_OFF_WRITER_WAITING ...
#define EB_OFF_TAIL ...
#define EB_OFF_READER_WAITING ...
#define EB_HEADER_SIZE ...
#define EB_PAD_MARKER ...
#define EB_ALIGN ...
typedef struct {
    char *hdr;
    uint32_t cap;
    uint32_t max_frame;
} eb_ring;

size_t eb_ring_size(uint32_t capacity);
int eb_init(char *r, uint32_t capacity, uint32_t max_frame);
int eb_check(char *r, uint32_t capacity);
int eb_open(eb_ring *d, char *r, uint32_t capacity);
uint64_t eb_head(eb_ring *r);
uint64_t eb_tail(eb_ring *r);

int eb_can_write(eb_ring *r, uint32_t n);
int eb_write(eb_ring *r, const char *frame, uint32_t n, int wake_fd);
int eb_prepare_sleep_space(eb_ring *r, uint32_t n);
int eb_wait_space(eb_ring *r, uint32_t n, int64_t spin_ns);

int64_t eb_available(eb_ring *r, uint64_t max_bytes, uint32_t max_frames);
int64_t eb_read(eb_ring *r, char *out, uint64_t outcap, uint32_t max_frames, int wake_fd);
int eb_readable(eb_ring *r);
int eb_prepare_sleep_data(eb_ring *r);
void eb_cancel_sleep_data(eb_ring *r);
int eb_wait_data(eb_ring *r, int64_t spin_ns);
int eb_wait_any(eb_ring **rings, int n, int64_t spin_ns);

typedef struct {
    uint64_t last_at;
} eb_sender;
int eb_ring_produce(eb_ring *R, eb_sender *S, const char *prefix, uint32_t plen, const char *key,
                    int32_t klen, const char *val, int32_t vlen, int64_t ts, uint32_t corr,
                    uint16_t api, int wake_fd, int hold);

#define EB_TAKE_INFO ...
#define EB_TAKE_PYTHON ...
#define EB_TAKE_CORRUPT ...
#define EB_TAKE_EOF ...
int64_t eb_take_ring(eb_ring *R, int epfd, int efd_data, double deadline, char *out,
                     uint64_t cap, int wake_fd, int64_t *arr, int64_t *info);
int64_t eb_take_sock(int fd, double deadline, char *out, uint64_t cap, int64_t *info);
#define EB_TAKE_GOT ...
typedef struct {
    eb_ring *ring;
    char *out;
    uint64_t cap;
    int64_t *arr;
    const char *want;
    uint64_t wlen;
    char *fmt;
    uint64_t fmt_cap;
    int64_t corr;
    int64_t head;
    int32_t epfd, efd_data, wake_fd;
    uint32_t max_records;
    int64_t got[10];  /* EB_TAKE_GOT: cffi needs the number (quick_take.py checks it) */
} eb_take_plan_t;
int64_t eb_take_plan(eb_take_plan_t *T, double deadline, int64_t min_offset);
int64_t eb_take_sock_plan(eb_take_plan_t *T, int fd, double deadline, int64_t min_offset);

char *eb_map(int fd, size_t size);
int eb_unmap(char *p, size_t size);
"""

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
# Loaded by path, not imported: edgebus/_cbuild.py says why.
_C = runpy.run_path(os.path.join(_ROOT, "_cbuild.py"))
# One unit: take.c (the consumer's wait) and produce.c (the producer's send) use ring.c's functions,
# produce.c also records.c's frame builder. Without zlib's header eb_ring_produce returns -2 (and
# the client sends no record in one step: eb_produce_frame cannot either).
ffibuilder = _C["builder"]("edgebus.shm._ring", CDEF, _C["read_sources"](
    os.path.join(_HERE, "ring.c"), os.path.join(_HERE, "take.c"),
    *(os.path.join(_ROOT, f) for f in _C["RECORDS"]), os.path.join(_HERE, "produce.c")))

if __name__ == "__main__":  # a manual in-tree build: python edgebus/shm/_build.py
    ffibuilder.compile(tmpdir=os.path.dirname(_ROOT), verbose=True)
