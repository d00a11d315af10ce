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
 * consumer has not read (SIOCOUTQ 0), with the bytes of encode_fetched_one. */

#include <sys/ioctl.h>
#include <sys/socket.h>

/* Whether the consumer has read every byte sent on fd (SIOCOUTQ 0): push's and may_answer's
 * rule. (An error counts as read: Python's path then looks, and decides.) */
static int sock_read_up(int fd) {
    int q = -1;
    return ioctl(fd, TIOCOUTQ, &q) != 0 || q == 0;
}

/* standing_frame's answer on the consumer's socket (plane.c answer_standing's socket twin). */
static void answer_standing_sock(eb_grant *g, const char *b, uint64_t n, int64_t count,
                                 eb_plane_call *c) {
    int q = -1;
    if (g->w_rest_len) return;  /* an answer went short this call: its rest goes first */
    /* SIOCOUTQ (= TIOCOUTQ): what the peer has not read yet; push's rule is 0 */
    if (ioctl(g->w_sock, TIOCOUTQ, &q) != 0 || q != 0) return;
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
    standing_answered(g, n, count, len);
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
