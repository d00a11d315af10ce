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
 * (edgebus/records.c eb_plan_fetched) and unpacks the records straight from that buffer.
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
