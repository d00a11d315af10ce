/* The data plane on a Unix-socket connection (docs/ARCHITECTURE.md, "The C data plane"): what
 * plane.c does for a ring's wake-up, for a socket's read. Compiled after plane.c in the same
 * translation unit (edgebus/shm/_plane_build.py); the Python half is
 * edgebus/server/listeners/sock_plane.py.
 *
 * eb_plane_sock_read reads once from the connection's socket (recv(2), what Python's
 * Connection.on_event would read), serves the frames it can with eb_plane_produce (their
 * acks=written answers gathered in the call's out buffer) and sends those answers in one
 * send(2): the byte stream the producer reads is Python's, answer for answer, in order. What it
 * read and could not serve (from the first frame it cannot take, or half a frame) is left in the
 * buffer for Python, which feeds it to the connection's framing and dispatches it as ever; its
 * answers follow the ones sent here (or queued behind their rest in Connection.out).
 *
 * A standing fetch of a socket consumer armed on a granted partition (w_sock) is answered the
 * way StandingFetches.push answers it on a socket: only while the kernel holds nothing the
 * consumer has not read (SIOCOUTQ 0), with the bytes of encode_fetched_one. In a parked wait,
 * a batch that finds SIOCOUTQ not 0 begins C's own hold of the fetch (below: hold_start). */

#include <sys/ioctl.h>
#include <sys/socket.h>

/* Whether the consumer has read every byte sent on fd (SIOCOUTQ 0): push's and may_answer's
 * rule. (An error counts as read: Python's path then looks, and decides.) */
static int sock_read_up(int fd) {
    int q = -1;
    return ioctl(fd, TIOCOUTQ, &q) != 0 || q == 0;
}

static void hold_start(eb_grant *g, const char *b, uint64_t n, int64_t count, eb_plane_call *c);

/* standing_frame's answer on the consumer's socket (plane.c answer_standing's socket twin). */
static void answer_standing_sock(eb_grant *g, const char *b, uint64_t n, int64_t count,
                                 eb_plane_call *c) {
    int q = -1;
    if (g->w_rest_len) return;  /* an answer went short this call: its rest goes first */
    /* SIOCOUTQ (= TIOCOUTQ): what the peer has not read yet; push's rule is 0 */
    if (ioctl(g->w_sock, TIOCOUTQ, &q) != 0) return;
    if (q != 0) { hold_start(g, b, n, count, c); return; }
    char f[EB_PLANE_ANSWER_MAX];
    uint64_t len = standing_frame(g, b, n, f);
    /* (room for its rest first, should the socket take only part of it: nothing is unsent) */
    if (len == 0 || c->rest == NULL || c->rest_cap - c->rest_len < (int64_t)len) return;
    ssize_t s;
    do s = send(g->w_sock, f, len, MSG_DONTWAIT | MSG_NOSIGNAL); while (s < 0 && errno == EINTR);
    if (s <= 0) return;  /* nothing went (a full or dead socket): the fetch stays, Python decides */
    if ((uint64_t)s < len) {  /* part of it went: the rest is Python's to queue, before anything */
        g->w_rest_at = c->rest_len;
        g->w_rest_len = (int64_t)(len - (uint64_t)s);
        memcpy(c->rest + c->rest_len, f + s, (size_t)g->w_rest_len);
        c->rest_len += g->w_rest_len;
    }
    standing_answered(g, n, count, len, 1);
}

/* C's own hold (in a parked wait only: c->held set). Python's may_answer holds a socket fetch
 * whose consumer has not read the answer before, and answers it, from the log, at the first
 * append or recheck (RECHECK_S, doubling up to SOCKET_RECHECK_MAX_S) that finds SIOCOUTQ 0:
 * what came meanwhile, in one frame (read_fetch's whole batches from the held offset, within
 * the fetch's byte limit). That hold cost the wait two returns to Python (the hold, the answer).
 * Here C does the same in the wait: the batch it could not answer, and each appended after it
 * (the wait is the partition's only writer: one fast link per partition), are kept in the
 * grant's buffer after the frame head's room; each append and each recheck look at SIOCOUTQ;
 * once 0, the kept batches go in one send(2), the bytes of Python's answer
 * (encode_fetched_one over read_fetch's records: the log end as high watermark). What C cannot
 * keep (past the fetch's limit or the buffer, a failed send) ends the hold, the fetch left
 * where it was for Python's on_append (the wait returns: standing_behind); and the wait's
 * sync-back ends a hold still on, the same way: Python then holds it, as before. */
static void hold_start(eb_grant *g, const char *b, uint64_t n, int64_t count, eb_plane_call *c) {
    if (c->held == NULL || c->hold_ns <= 0 || c->rest == NULL || g->w_hbuf == NULL
            || (int64_t)n > g->w_hmax
            || (int64_t)(standing_head_len(g) + n) > g->w_hcap)
        return;
    if (!g->w_listed) {
        if (c->nheld >= c->held_cap) return;
        c->held[c->nheld++] = g;
        g->w_listed = 1;
    }
    memcpy(g->w_hbuf + standing_head_len(g), b, n);
    g->w_hold = 1;
    g->w_hlen = (int64_t)n;
    g->w_hbatches = 1;
    g->w_hrecords = count;
    g->w_hstep_ns = c->hold_ns;
    g->w_hnext_ns = now_ns() + c->hold_ns;
}

/* The held answer in one send (room for its rest first, as answer_standing_sock). Returns 0
 * when nothing went: the hold is then over, and Python's. */
static int held_send(eb_grant *g, eb_plane_call *c) {
    uint64_t len = standing_head(g, (uint64_t)g->w_hlen, g->w_hbuf) + (uint64_t)g->w_hlen;
    ssize_t s = -1;
    if (c->rest != NULL && c->rest_cap - c->rest_len >= (int64_t)len) {
        do s = send(g->w_sock, g->w_hbuf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (s < 0 && errno == EINTR);
    }
    g->w_hold = 0;
    if (s <= 0) return 0;
    if ((uint64_t)s < len) {
        g->w_rest_at = c->rest_len;
        g->w_rest_len = (int64_t)(len - (uint64_t)s);
        memcpy(c->rest + c->rest_len, g->w_hbuf + s, (size_t)g->w_rest_len);
        c->rest_len += g->w_rest_len;
    }
    standing_answered(g, (uint64_t)g->w_hlen, g->w_hrecords, len, g->w_hbatches);
    c->held_answers++;
    return 1;
}

/* A batch appended while held in C: kept, then the held answer sent if the consumer has read. */
static void hold_more(eb_grant *g, const char *b, uint64_t n, int64_t count, eb_plane_call *c) {
    uint64_t at = standing_head_len(g) + (uint64_t)g->w_hlen;
    if (g->w_hlen + (int64_t)n > g->w_hmax || (int64_t)(at + n) > g->w_hcap) {
        g->w_hold = 0;  /* Python's read_fetch would cut it here: its on_append decides */
        return;
    }
    memcpy(g->w_hbuf + at, b, n);
    g->w_hlen += (int64_t)n;
    g->w_hbatches++;
    g->w_hrecords += count;
    if (!g->w_rest_len && sock_read_up(g->w_sock)) held_send(g, c);
}

/* The parked wait's rechecks: each hold whose look is due is answered if its consumer has read,
 * else looked at again after twice the step (at most hold_max_ns), as Python's held fetch is.
 * Returns the next look's time (-1: no hold), and 1 in *py when a hold ended unanswered (a
 * failed send) and Python must look (its sync-back's on_append). */
static int64_t held_looks(eb_plane_call *c, int64_t now, int *py) {
    int64_t next = -1;
    for (int i = 0; i < c->nheld; i++) {
        eb_grant *g = c->held[i];
        if (!g->w_hold) continue;
        if (now >= g->w_hnext_ns) {
            if (!g->w_rest_len && sock_read_up(g->w_sock)) {
                if (!held_send(g, c)) *py = 1;
                continue;
            }
            g->w_hstep_ns *= 2;
            if (g->w_hstep_ns > c->hold_max_ns) g->w_hstep_ns = c->hold_max_ns;
            g->w_hnext_ns = now + g->w_hstep_ns;
        }
        if (next < 0 || g->w_hnext_ns < next) next = g->w_hnext_ns;
    }
    return next;
}

/* Send the call's gathered answers on fd; c->sent: bytes the socket took (-1: the peer is gone;
 * Connection.queue's OSError), the rest Python queues in Connection.out. */
static void plane_sock_flush(int fd, eb_plane_call *c) {
    c->sent = 0;
    if (c->out_len == 0) return;
    ssize_t s;
    do s = send(fd, c->out, (size_t)c->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
    while (s < 0 && errno == EINTR);
    if (s >= 0) c->sent = s;
    else if (errno != EAGAIN && errno != EWOULDBLOCK) c->sent = -1;
}

/* Serve buf[start:len] (bytes read from the socket fd) and send the answers. Returns where
 * Python goes on (len: every frame taken). */
int64_t eb_plane_sock_serve(int fd, char *buf, int64_t start, int64_t len, eb_grant **grants,
                            int ng, eb_plane_call *c) {
    c->out_len = 0;
    int64_t at = eb_plane_produce(buf, start, len, grants, ng, NULL, -1, c);
    plane_sock_flush(fd, c);
    return at;
}

/* One read of the socket into buf[have:cap] (buf[0:have]: the stream's bytes before it, the
 * start of a frame that an earlier read ended inside), then eb_plane_sock_serve over
 * buf[0:have+read]. Returns have + the bytes read (0 at EOF, -errno when recv failed: -EAGAIN
 * when nothing was there), and in c->why and *at what was served: buf[*at:returned] is Python's. */
int64_t eb_plane_sock_read(int fd, char *buf, int64_t have, int64_t cap, eb_grant **grants,
                           int ng, eb_plane_call *c, int64_t *at) {
    ssize_t n;
    *at = 0;
    c->out_len = 0;
    c->sent = 0;
    do n = recv(fd, buf + have, (size_t)(cap - have), MSG_DONTWAIT); while (n < 0 && errno == EINTR);
    if (n < 0) return -(int64_t)errno;
    if (n == 0) return 0;
    *at = eb_plane_sock_serve(fd, buf, 0, have + n, grants, ng, c);
    return have + n;
}
