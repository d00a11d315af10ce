/* edgebus/shm/take.c: a consumer's wait for its next response, in one C call.
 *
 * Compiled after ring.c into edgebus.shm._ring (edgebus/shm/_build.py). A paced consumer waits
 * for every answer of its standing fetch (edgebus/client/shm_channel.py standing_records): on
 * the rings that was a dozen Python calls and as many C calls per answer (look at the ring,
 * announce the sleep, epoll, withdraw it, size the frames, copy them into a new bytearray,
 * split them into ResponseFrame objects, note the arrival); on the socket a select() and a
 * recv() of a new 1 MiB bytes object. Here each is one call that leaves one whole response
 * frame (u32 length, correlation id, error code, body: docs/FORMAT.md 7.2) in a buffer the
 * caller owns and reuses, and its header fields in info[]; the caller then plans the body
 * (edgebus/records_fetch.c eb_plan_fetched) and unpacks the records straight from that buffer.
 * Anything unusual (the socket became readable, a signal, a frame that does not fit, bytes
 * that are not exactly one whole frame) is handed back to the Python path, which does what it
 * did before.
 */
#include <limits.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define EB_TAKE_INFO 4     /* info[]: correlation id, error code, frame bytes, more to read */
#define EB_TAKE_PYTHON -3  /* the Python path must look (socket readable, EINTR, too large) */
#define EB_TAKE_CORRUPT -1 /* the ring's entries are inconsistent (Ring.read raises) */
#define EB_TAKE_EOF -2     /* the socket's peer closed the connection */
#define EB_GAP_CAP_NS 1000000 /* edgebus/shm/spin.py GAP_CAP_NS */
#define EB_TAKE_GOT 10     /* eb_take_plan's got[]: info[4], the format length, the plan's out[5] */

/* records.c, compiled after this file into the same module (edgebus/shm/_build.py). */
int64_t eb_plan_fetched(const char *b, uint64_t n, const char *want, uint64_t wlen,
                        int64_t min_offset, uint32_t max_records, char *fmt, uint64_t cap,
                        int64_t *out);

/* eb_take_plan's arguments, set once per channel (the fields in the order of the cdef). */
typedef struct {
    eb_ring *ring;
    char *out;          /* the answer buffer (a whole response frame) */
    uint64_t cap;
    int64_t *arr;       /* the ring's Arrivals {last, gap} */
    const char *want;   /* eb_plan_fetched's partition prefix */
    uint64_t wlen;
    char *fmt;          /* eb_plan_fetched's format text */
    uint64_t fmt_cap;
    int64_t corr;       /* the standing fetch's correlation id: only its answers are planned */
    int64_t head;       /* response header bytes (docs/FORMAT.md 7.2) */
    int32_t epfd, efd_data, wake_fd;
    uint32_t max_records;
    int64_t got[EB_TAKE_GOT];
} eb_take_plan_t;

/* Python's floor division by 4 (spin.py's `(g - gap) // 4`), for negative values too. */
static inline int64_t floordiv4(int64_t x) { return x >= 0 ? x / 4 : -((-x + 3) / 4); }

/* edgebus/shm/spin.py Arrivals.arrived on arr = {last, gap}. */
static void arrived(int64_t *arr, int64_t now) {
    if (arr[0]) {
        int64_t g = now - arr[0];
        if (g > EB_GAP_CAP_NS) g = EB_GAP_CAP_NS;
        arr[1] += floordiv4(g - arr[1]);
    }
    arr[0] = now;
}

static void frame_info(const char *out, int64_t n, int64_t *info) {
    uint32_t corr;
    int16_t err;
    memcpy(&corr, out + 4, 4);
    memcpy(&err, out + 8, 2);
    info[0] = corr;
    info[1] = err;
    info[2] = n;
}

/* Ms to wait until deadline (seconds on CLOCK_MONOTONIC, Python's time.monotonic()), rounded
 * up as Python's epoll.poll rounds; -1 once it has passed. */
static int wait_ms(double deadline) {
    double left = deadline - (double)now_ns() / 1e9;
    if (left <= 0) return -1;
    double ms = left * 1000.0;
    if (ms >= (double)INT_MAX) return INT_MAX;
    int m = (int)ms;
    return (double)m < ms ? m + 1 : m;
}

/* The next response frame of the ring (one whole frame, copied into out), waiting until
 * `deadline` for it: sleep announced on the ring, then epoll_wait on epfd (the reader's epoll:
 * efd_data edge-triggered, the socket level-triggered). Returns the frame's bytes (info[0..2]:
 * correlation id, error code, bytes; info[3]: 1 when the ring holds more), 0 at the deadline,
 * EB_TAKE_CORRUPT, or EB_TAKE_PYTHON when the socket is readable (EOF, shutdown by close(), a
 * frame too large for the ring), epoll failed (EINTR: Python runs its signal handlers) or the
 * frame is larger than cap. arr: the ring's Arrivals {last, gap}, updated as Arrivals.arrived. */
int64_t eb_take_ring(eb_ring *R, int epfd, int efd_data, double deadline, char *out,
                     uint64_t cap, int wake_fd, int64_t *arr, int64_t *info) {
    for (;;) {
        int64_t got = eb_read(R, out, cap, 1, wake_fd);
        if (got > 0) {
            frame_info(out, got, info);
            info[3] = eb_readable(R);
            arrived(arr, now_ns());
            return got;
        }
        if (got == -2) return EB_TAKE_PYTHON;
        if (got < 0) return EB_TAKE_CORRUPT;
        if (eb_readable(R)) continue; /* padding was consumed: the frame after it */
        if (eb_prepare_sleep_data(R)) continue;
        int ms = wait_ms(deadline);
        if (ms < 0) {
            eb_cancel_sleep_data(R);
            return 0;
        }
        struct epoll_event ev[2];
        int k = epoll_wait(epfd, ev, 2, ms);
        eb_cancel_sleep_data(R);
        if (k < 0) return EB_TAKE_PYTHON;
        for (int i = 0; i < k; i++)
            if (ev[i].data.fd != efd_data) return EB_TAKE_PYTHON;
    }
}

/* The socket transport's counterpart: wait until `deadline` for fd (a blocking Unix socket) to
 * be readable, then one recv of at most cap bytes into out. Returns the bytes received (info[0..2]
 * as eb_take_ring when they start with a whole frame: its correlation id, error code and bytes,
 * else info[2] = -1), 0 at the deadline, EB_TAKE_EOF, or EB_TAKE_PYTHON (poll or recv failed:
 * EINTR included). */
int64_t eb_take_sock(int fd, double deadline, char *out, uint64_t cap, int64_t *info) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (;;) {
        int ms = wait_ms(deadline);
        if (ms < 0) return 0;
        int k = poll(&p, 1, ms);
        if (k < 0) return EB_TAKE_PYTHON;
        if (k > 0) break;
    }
    ssize_t n = recv(fd, out, cap, MSG_DONTWAIT);
    if (n == 0) return EB_TAKE_EOF;
    if (n < 0) return EB_TAKE_PYTHON;
    info[2] = -1;
    if (n >= 10) {
        uint32_t len;
        memcpy(&len, out, 4);
        if ((uint64_t)len + 4 <= (uint64_t)n) {
            frame_info(out, (int64_t)len + 4, info);
        }
    }
    return n;
}

/* A consumer's ring take and the plan of its records in one call (edgebus/client/quick_take.py):
 * eb_take_ring's and eb_plan_fetched's arguments that stay the same from answer to answer are
 * set once in T, so each answer costs one cffi call with three arguments instead of two with
 * nine each (and a functools.partial), and its header fields and plan come back in T->got, read
 * with one struct unpack. The wait, the copy and the plan are eb_take_ring's and
 * eb_plan_fetched's own: no other shared-memory access. got[]: correlation id, error code,
 * frame bytes, more in the ring (eb_take_ring's info), the plan's format length (0: not planned:
 * another correlation id, an error, or what eb_plan_fetched declines), then eb_plan_fetched's
 * out[] (high watermark, log start, end offset, records, first offset). */
int64_t eb_take_plan(eb_take_plan_t *T, double deadline, int64_t min_offset) {
    int64_t *g = T->got;
    int64_t n = eb_take_ring(T->ring, T->epfd, T->efd_data, deadline, T->out, T->cap,
                             T->wake_fd, T->arr, g);
    g[EB_TAKE_INFO] = 0;
    if (n > T->head && g[0] == T->corr && g[1] == 0)
        g[EB_TAKE_INFO] = eb_plan_fetched(T->out + T->head, (uint64_t)(n - T->head), T->want,
                                          T->wlen, min_offset, T->max_records, T->fmt,
                                          T->fmt_cap, g + EB_TAKE_INFO + 1);
    return n;
}

/* eb_take_sock's counterpart of eb_take_plan (T's ring fields unused): one recv from fd, and
 * when it starts with a whole frame answering T->corr with no error, the plan of that frame's
 * records in got[] as eb_take_plan's (got[2]: the first frame's bytes, -1 when not whole). */
int64_t eb_take_sock_plan(eb_take_plan_t *T, int fd, double deadline, int64_t min_offset) {
    int64_t *g = T->got;
    int64_t n = eb_take_sock(fd, deadline, T->out, T->cap, g);
    g[EB_TAKE_INFO] = 0;
    if (n > 0 && g[2] > T->head && g[0] == T->corr && g[1] == 0)
        g[EB_TAKE_INFO] = eb_plan_fetched(T->out + T->head, (uint64_t)(g[2] - T->head), T->want,
                                          T->wlen, min_offset, T->max_records, T->fmt,
                                          T->fmt_cap, g + EB_TAKE_INFO + 1);
    return n;
}
