/* A producer's one-record send on the Unix socket in one call (issue 16).
 *
 * Compiled after records.c (edgebus/_records_build.py joins the two): the frame of
 * eb_produce_frame, built into the channel's buffer, the "has the supervisor read what we wrote"
 * look (SIOCOUTQ) when asked, and one non-blocking send(2), where the client used to make the
 * frame, slice a memoryview of it and call sendall. What send(2) did not take (a full socket
 * buffer) the caller sends with sendall, which waits (edgebus/client/socket_acks.py).
 */
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>

#define EB_SEND_DECLINED -3 /* unread bytes were waiting: nothing built or sent */

/* Returns the bytes send(2) took (0 .. the frame's length; the frame's length is the caller's
 * to know: eb_produce_frame's), -1 the frame does not fit cap, -2 built without zlib,
 * EB_SEND_DECLINED when check_unread and the peer has yet to read bytes written before, or
 * -(1000 + errno) when send(2) failed otherwise (EAGAIN is 0 bytes taken). */
int64_t eb_sock_produce(int fd, char *buf, uint64_t cap, const char *prefix, uint32_t plen,
                        const char *key, int32_t klen, const char *val, int32_t vlen, int64_t ts,
                        uint32_t corr, uint16_t api, int check_unread) {
    if (check_unread) {
        int queued = 0;
        /* A Unix stream socket's bytes stay charged to the sender until the peer reads them. */
        if (ioctl(fd, SIOCOUTQ, &queued) == 0 && queued > 0) return EB_SEND_DECLINED;
    }
    int64_t n = eb_produce_frame(buf, cap, prefix, plen, key, klen, val, vlen, ts, corr, api);
    if (n < 0) return n;
    ssize_t sent;
    do {
        sent = send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -(1000 + (int64_t)errno);
    return (int64_t)sent;
}
