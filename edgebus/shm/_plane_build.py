"""cffi API-mode build of edgebus.shm._plane: the data plane (plane.c for rings, sockplane.c for
Unix-socket connections), compiled in one translation unit after ring.c and records.c so that
it calls their eb_write and eb_check_batch directly. (Run by setup.py's cffi_modules at install
time; optional like the other two: without it the supervisor serves every frame in Python, as
before.)
"""

from __future__ import annotations

import os
import runpy

CDEF = """
#define EB_PLANE_TOPIC_MAX ...
#define EB_PLANE_BATCHES ...
#define EB_PLANE_RECENT ...
#define EB_PLANE_INDEX_MAX ...
#define EB_PLANE_TAIL ...
typedef struct {
    int64_t log_end;
    int64_t max_append_time;
    int64_t seg_base;
    int64_t seg_size;
    int64_t first_append_time;
    int64_t bytes_since_index;
    int64_t segment_bytes;
    int64_t segment_ms;
    int64_t max_message_bytes;
    int64_t index_interval;
    int64_t log_start;
    int32_t fd;
    int32_t partition;
    int32_t index_ok;
    uint16_t topic_len;
    char topic[];
    int32_t n;
    int32_t cut_failed;
    int32_t write_errno;
    int64_t records, bytes;
    int64_t rel[];
    int64_t pos[];
    int32_t ix_n;
    int64_t ix_rel[];
    int64_t ix_pos[];
    int64_t ix_time[];
    int64_t last_at, last_len;
    int64_t tail_len;
    char tail[];
    void *w_ring;
    int32_t w_efd;
    uint32_t w_corr;
    int64_t w_offset;
    int64_t w_min_bytes;
    int32_t w_answers;
    int64_t w_records, w_bytes;
    int64_t w_last;
    int32_t w_sock;
    int64_t w_rest_at, w_rest_len;
    int64_t w_window;
    int64_t w_room;
    int32_t w_held;
    int32_t w_ready;
    int32_t w_batches;
    char *w_hbuf;
    int64_t w_hcap;
    int64_t w_hmax;
    int32_t w_hold;
    int32_t w_listed;
    ...;
} eb_grant;
typedef struct {
    int64_t budget;
    int64_t frames;
    int64_t answers;
    int32_t why;
    char *out;
    int64_t out_len, out_cap;
    int64_t sent;
    char *rest;
    int64_t rest_len, rest_cap;
    int64_t held_answers;
    ...;
} eb_plane_call;
int64_t eb_plane_produce(char *buf, int64_t start, int64_t len, eb_grant **grants, int ng,
                         void *resp, int efd_data, eb_plane_call *c);
int64_t eb_plane_ring(void *req, int efd_space, char *scratch, uint64_t cap, uint32_t max_frames,
                      eb_grant **grants, int ng, void *resp, int efd_data, eb_plane_call *c);
int64_t eb_plane_sock_serve(int fd, char *buf, int64_t start, int64_t len, eb_grant **grants,
                            int ng, eb_plane_call *c);
int64_t eb_plane_sock_read(int fd, char *buf, int64_t have, int64_t cap, eb_grant **grants,
                           int ng, eb_plane_call *c, int64_t *at);

#define EB_PARK_EVENTS ...
#define EB_PARK_OUT ...
#define EB_PARK_FDS ...
#define EB_PARK_LOOP ...
#define EB_PARK_TIMEOUT ...
#define EB_PARK_PYTHON ...
#define EB_PARK_EINTR ...
#define EB_PARK_ERROR ...
#define EB_TO_PY_N ...
typedef struct {
    void *req, *resp;
    int32_t efd_space, efd_data;
    int32_t id;
    int32_t fast;
    int32_t ng;
    int32_t py_after;
    eb_grant **grants;
    int32_t sock;
    int32_t fd;
    int64_t frames, answers;
    int64_t arr_last, arr_gap;
    int32_t queued;
    ...;
} eb_park_link;
typedef struct {
    int32_t main_fd;
    int64_t deadline_ns;
    int64_t budget;
    int64_t spin_gap_ns;
    int64_t gap_cap_ns;
    char *scratch;
    uint64_t cap;
    uint32_t max_frames;
    eb_plane_call *call;
    char *sbuf;
    int64_t scap;
    int64_t hold_ns, hold_max_ns;
    eb_park_link *byfd[];
    int32_t why;
    int32_t err;
    int32_t py;
    int32_t nev;
    int32_t ev_fd[];
    uint32_t ev_mask[];
    int32_t nout;
    int32_t out[];
    int32_t k_link;
    int64_t k;
    int32_t s_fd;
    int64_t s_got, s_at;
    int64_t served;
    int64_t sock_reads;
    int64_t to_py[];
    ...;
} eb_park;
void eb_park_wait(eb_park *P);
"""

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
# Loaded by path, not imported: edgebus/_cbuild.py says why.
_C = runpy.run_path(os.path.join(_ROOT, "_cbuild.py"))
# Without zlib's header eb_check_batch leaves the CRC to Python, and the plane then takes no
# frame (every batch needs its CRC checked).
ffibuilder = _C["builder"]("edgebus.shm._plane", CDEF, _C["read_sources"](
    os.path.join(_HERE, "ring.c"), *(os.path.join(_ROOT, f) for f in _C["RECORDS"]),
    os.path.join(_HERE, "plane.c"), os.path.join(_HERE, "sockplane.c"), os.path.join(_HERE, "park.c")))

if __name__ == "__main__":  # a manual in-tree build: python edgebus/shm/_plane_build.py
    ffibuilder.compile(tmpdir=os.path.dirname(_ROOT), verbose=True)
