/* A producer's one-record send into its request ring in one call (issue 16).
 *
 * Compiled after ring.c and records.c (edgebus/shm/_build.py joins the three): it builds
 * eb_produce_frame's bytes (records.c: the PRODUCE frame of a batch of one record, its CRC)
 * straight into the space ring.c's writer reserves, publishes them with the same memory order
 * as eb_write (ring_reserve / ring_publish), and decides the hold and the doorbell, where the
 * client used to run four C calls (the frame into a buffer, the ring's head and tail, the
 * write) and a copy. The bytes are eb_produce_frame's (tests/client/test_send_c.py).
 */

/* A request ring's writer-side state, the client's alone (never shared memory). */
typedef struct {
    uint64_t last_at; /* the ring's head before our last request */
} eb_sender;

/* The frame of (prefix, key, value, ts, corr, api), as eb_produce_frame, written into R and
 * published. hold: write nothing and return 2 while the reader has not taken everything
 * written before our last request (tail < S->last_at: more than one request behind; the
 * producer then keeps the record in an open batch, edgebus/client/fast_send.py). Returns 1
 * written (S->last_at moves to where it began), 0 no room now, 2 declined, -1 larger than the
 * ring's max frame, -2 built without zlib: nothing is written unless 1. */
int eb_ring_produce(eb_ring *R, eb_sender *S, const char *prefix, uint32_t plen, const char *key,
                    int32_t klen, const char *val, int32_t vlen, int64_t ts, uint32_t corr,
                    uint16_t api, int wake_fd, int hold) {
#ifndef EB_HAVE_ZLIB
    return -2;
#else
    uint64_t at = __atomic_load_n(U64AT(R->hdr, EB_OFF_HEAD), __ATOMIC_RELAXED);
    if (hold && __atomic_load_n(U64AT(R->hdr, EB_OFF_TAIL), __ATOMIC_ACQUIRE) < S->last_at)
        return 2;
    uint64_t kl = klen > 0 ? (uint64_t)klen : 0, vl = vlen > 0 ? (uint64_t)vlen : 0;
    uint64_t n = 12 + (uint64_t)plen + 4 + 64 + 22 + kl + vl; /* eb_produce_frame's size */
    if (n > R->max_frame) return -1;
    uint64_t next;
    char *o = ring_reserve(R, (uint32_t)n, &next);
    if (o == NULL) return 0;
    if (eb_produce_frame(o, n, prefix, plen, key, klen, val, vlen, ts, corr, api) != (int64_t)n)
        return -1; /* cannot happen (the size above is its size); nothing is published */
    ring_publish(R, next, wake_fd);
    S->last_at = at;
    return 1;
#endif
}
