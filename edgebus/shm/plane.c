/* The shm data plane (docs/ARCHITECTURE.md, "The C data plane"): the common PRODUCE served
 * from the frames a link's wake-up read, in one call, on the loop thread. (sockplane.c, compiled
 * after this file, serves a Unix-socket connection's reads with the same eb_plane_produce: its
 * answers then go to the call's out buffer instead of a response ring.)
 *
 * Compiled after ring.c and records.c in one translation unit (edgebus/shm/_plane_build.py), so
 * eb_write and eb_check_batch below are those files' own functions.
 *
 * For each frame, in order, eb_plane_produce takes it only when it is a plain PRODUCE v0 that the
 * supervisor's Python path would take and answer the same way: acks none or written, one batch
 * that eb_check_batch accepts under the topic's max_message_bytes, no attributes, no producer
 * id, to a partition this link holds a grant for (edgebus/server/listeners/shm_plane.py decides
 * grants and keeps them current), with no roll, index entry or recent-list trim due, within the
 * disk guard's budget, and room for the answer in the response ring. It stamps base offset and
 * append time (never going backwards), appends the batch with write(2) to the active segment,
 * and writes the acks=written answer (the bytes of fastpath.produce.encode_produce_response).
 * At the first frame it cannot take it stops: Python dispatches that frame as before.
 *
 * Single writer: the call runs on the loop thread, between two Python statements, so it writes
 * each partition exactly where Python would at that moment; Python brings its own view up to
 * date from the grant's counters right after (sync-back) before anything else runs. */

#include <errno.h>
#include <time.h>
#include <unistd.h>

#define EB_PLANE_TOPIC_MAX 255
/* Batches one grant takes between two sync-backs. Only the last EB_PLANE_RECENT of them are
 * kept (the segment's recent lists hold at most that many, segment.py 2 * RECENT_BATCHES: the
 * sync-back keeps what that list's trimming would keep); this bound only keeps the counts small. */
#define EB_PLANE_BATCHES (1 << 20)
#define EB_PLANE_RECENT 128
/* Index entries (offset and time index) due between two sync-backs, written by the sync-back
 * (Segment.index_entry): more, and the plane declines (EB_PLANE_INDEX) until Python synced.
 * 256: at 1 KiB and 10,000/s (an entry every fourth batch) a parked wait that returns only for
 * the loop's timers (every 20-45 ms) notes 50-110; 64 sent ~1 frame in 700 to Python's path. */
#define EB_PLANE_INDEX_MAX 256
#define EB_PLANE_TAIL 4096     /* partition_append.TAIL_BATCH_BYTES: the last batch kept */
#define EB_PLANE_ANSWER_MAX 8192  /* a standing-fetch answer written in C, at most */
#define EB_API_PRODUCE 4
#define EB_U32_MAX 0xFFFFFFFFll

/* Why a call stopped (eb_plane_call.why). */
#define EB_PLANE_END 0         /* every frame taken */
#define EB_PLANE_OTHER 1       /* not a PRODUCE v0, or malformed: Python decides */
#define EB_PLANE_NO_GRANT 2
#define EB_PLANE_ACKS 3        /* acks durable (or unknown) */
#define EB_PLANE_BATCH 4       /* eb_check_batch refused it, or attributes / producer id */
#define EB_PLANE_ROLL 5
#define EB_PLANE_INDEX 6
#define EB_PLANE_FULL 7        /* the grant's recent-list room or per-call batches used up */
#define EB_PLANE_BUDGET 8
#define EB_PLANE_RING 9        /* no room for the answer now */
#define EB_PLANE_WRITE 10      /* write(2) failed: cut back; Python retries and reports */
#define EB_PLANE_RING_END 11   /* eb_plane_ring: the ring is empty */
#define EB_PLANE_RING_BIG 12   /* eb_plane_ring: the next frame is larger than the scratch buffer */
#define EB_PLANE_RING_BAD 13   /* eb_plane_ring: the ring's entries are inconsistent */

typedef struct {
    /* set by Python (grant, refresh) and kept current by the call */
    int64_t log_end;           /* next offset */
    int64_t max_append_time;
    int64_t seg_base;          /* the active segment */
    int64_t seg_size;
    int64_t first_append_time;
    int64_t bytes_since_index;
    int64_t segment_bytes;     /* the topic's config */
    int64_t segment_ms;
    int64_t max_message_bytes;
    int64_t index_interval;
    int64_t log_start;
    int32_t fd;                /* the active segment's fd */
    int32_t partition;
    int32_t index_ok;          /* 1: the segment's index writers are open (entries may be due) */
    uint16_t topic_len;
    char topic[EB_PLANE_TOPIC_MAX + 1];
    /* what one call did (Python's sync-back reads, then zeroes n) */
    int32_t n;                 /* batches appended */
    int32_t cut_failed;        /* a failed write could not be cut back: Python takes it offline */
    int32_t write_errno;       /* the failed write's errno: Python decides (offline unless ENOSPC) */
    int64_t records, bytes;
    /* batch k's (0-based since the sync-back) relative offset and position at [k % RECENT]:
     * the last EB_PLANE_RECENT of them, all the segment's recent lists can keep */
    int64_t rel[EB_PLANE_RECENT], pos[EB_PLANE_RECENT];
    /* index entries due (note_batch's: at the batch that found bytes_since_index >= interval),
     * for the sync-back to write in order: relative offset, position, append time */
    int32_t ix_n;
    int64_t ix_rel[EB_PLANE_INDEX_MAX], ix_pos[EB_PLANE_INDEX_MAX], ix_time[EB_PLANE_INDEX_MAX];
    int64_t last_at, last_len; /* the last batch's place in the caller's buffer */
    int64_t tail_len;          /* the last batch's length when copied into tail, else -1 */
    char tail[EB_PLANE_TAIL];  /* (the caller's buffer may be reused before the sync-back) */
    /* A consumer's standing fetch armed on this partition (Python sets it before each call when
     * StandingFetches.push would answer it; w_ring NULL: none): answered from each batch
     * appended at exactly its offset while its consumer has read every answer before. */
    void *w_ring;              /* that consumer's response ring (an eb_ring *) */
    int32_t w_efd;             /* its reader's eventfd */
    uint32_t w_corr;           /* the standing fetch's correlation id */
    int64_t w_offset;          /* the offset it asks for (moved on by each answer) */
    int64_t w_min_bytes;
    int32_t w_answers;         /* out: answers written this call */
    int64_t w_records, w_bytes;
    int64_t w_last;            /* out: the last answer's frame bytes (ShmLink.last_entry) */
    /* The standing fetch is a Unix-socket connection's instead (w_ring NULL; sockplane.c): its
     * socket, -1 none. An answer the socket took only part of leaves the rest in the call's
     * rest buffer for Python to queue (Connection.out), and no further answer goes to that
     * socket this call. */
    int32_t w_sock;
    int64_t w_rest_at, w_rest_len;  /* out: that rest's place in c->rest (len 0: none) */
    int64_t w_window;          /* the consumer link's last_entry (moved on by each answer);
                                * -1: none, the ring must be empty */
    int64_t w_room;            /* tuning.STANDING_WINDOW: the unread bytes the answer may find
                                * are at most the larger of this and w_window (caught_up's) */
    /* The socket consumer's fetch is held until it has read (w_sock; StandingFetches.may_answer
     * holds it, indexed under the partition): each append only looks at SIOCOUTQ, as
     * may_answer would, and does nothing while it is not 0, as may_answer would; once it is 0,
     * w_ready sends the call's appends to Python's on_append, which answers from the log. */
    int32_t w_held;
    int32_t w_ready;           /* out */
    int32_t w_batches;         /* out: batches those answers carried (a held answer: several) */
    /* A socket consumer's fetch held by C itself (sockplane.c, "C's own hold"): begun in a
     * parked wait at a batch its consumer had not read the answer before (SIOCOUTQ not 0), the
     * batches since w_offset kept in w_hbuf and answered in one frame once it has read. Python
     * sets the buffer and the limit (_watch); a wait's sync-back ends a hold still on. */
    char *w_hbuf;              /* the held answer's frame: its head's room, then the batches */
    int64_t w_hcap;            /* (NULL / 0: no hold in C) */
    int64_t w_hmax;            /* read_fetch's byte limit for this fetch: more, and Python's */
    int32_t w_hold;            /* 1: held in C */
    int32_t w_listed;          /* 1: in the parked wait's list of held grants (call->held) */
    int64_t w_hlen, w_hbatches, w_hrecords;  /* the held batches */
    int64_t w_hnext_ns, w_hstep_ns;  /* its next look without an append, and the step to it */
} eb_grant;

typedef struct {
    int64_t budget;            /* in: disk guard bytes before a check is due; out: what is left */
    int64_t frames;            /* out: frames taken */
    int64_t answers;           /* out: answer frames written */
    int32_t why;               /* out: EB_PLANE_* */
    /* A socket connection's call (sockplane.c; resp NULL): its acks=written answers are
     * gathered here, sent in one send(2) after the call's frames (EB_PLANE_RING when full). */
    char *out;
    int64_t out_len, out_cap;
    int64_t sent;              /* out: bytes of out the socket took; -1: the peer is gone */
    /* Where the rests of standing answers a consumer's socket took only part of go (NULL: no
     * socket consumer is answered in C); rest_len > 0 after the call: some did (w_rest_*). */
    char *rest;
    int64_t rest_len, rest_cap;
    /* The parked wait's (park.c; NULL outside it: no hold in C then): the grants held in C this
     * wait, and the looks' timing (standing.py RECHECK_S, doubling up to SOCKET_RECHECK_MAX_S) */
    eb_grant **held;
    int32_t nheld, held_cap;
    int64_t hold_ns, hold_max_ns;
    int64_t held_answers;      /* held answers written in C (statistics) */
} eb_plane_call;

static void answer_standing_sock(eb_grant *g, const char *b, uint64_t n, int64_t count,
                                 eb_plane_call *c);
static void hold_more(eb_grant *g, const char *b, uint64_t n, int64_t count, eb_plane_call *c);
static int sock_read_up(int fd);

static inline int64_t wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static eb_grant *find_grant(eb_grant **g, int ng, const char *topic, uint16_t tl, int32_t part) {
    for (int i = 0; i < ng; i++)
        if (g[i]->partition == part && g[i]->topic_len == tl && memcmp(g[i]->topic, topic, tl) == 0)
            return g[i];
    return NULL;
}

/* The FETCH answer of the standing fetch g->w_* from batch b (n bytes, just appended, ending at
 * g->log_end), written into f: the bytes of fastpath.fetch.encode_fetched_one. Returns its length,
 * 0 when it would not fit EB_PLANE_ANSWER_MAX (the fetch then stays where it was and Python's
 * on_append decides after the call). */
static uint64_t standing_head_len(eb_grant *g) { return 4 + 6 + 4 + 2 + g->topic_len + 28; }

/* Its head (everything before the records, n bytes of them) into f; returns its length. */
static uint64_t standing_head(eb_grant *g, uint64_t n, char *f) {
    uint16_t tl = g->topic_len;
    uint64_t head = standing_head_len(g);
    uint32_t u32 = (uint32_t)(head + n - 4);
    int16_t zero16 = 0;
    int32_t one = 1, part = g->partition, rl = (int32_t)n;
    memcpy(f, &u32, 4);
    memcpy(f + 4, &g->w_corr, 4);
    memcpy(f + 8, &zero16, 2);
    memcpy(f + 10, &one, 4);
    memcpy(f + 14, &tl, 2);
    memcpy(f + 16, g->topic, tl);
    char *o = f + 16 + tl;
    memcpy(o, &part, 4);
    memcpy(o + 4, &zero16, 2);   /* error_code */
    memcpy(o + 6, &zero16, 2);   /* error_message: empty */
    memcpy(o + 8, &g->log_end, 8);    /* high watermark: the log end after the batch */
    memcpy(o + 16, &g->log_start, 8);
    memcpy(o + 24, &rl, 4);
    return head;
}

static uint64_t standing_frame(eb_grant *g, const char *b, uint64_t n, char *f) {
    uint64_t head = standing_head_len(g);
    if (head + n > EB_PLANE_ANSWER_MAX) return 0;
    standing_head(g, n, f);
    memcpy(f + head, b, n);
    return head + n;
}

/* The standing fetch's bookkeeping after its answer (len frame bytes: n bytes of records,
 * count records, in batches batches) went out. */
static void standing_answered(eb_grant *g, uint64_t n, int64_t count, uint64_t len,
                              int64_t batches) {
    g->w_offset = g->log_end;
    g->w_answers++;
    g->w_batches += (int32_t)batches;
    g->w_records += count;
    g->w_bytes += (int64_t)n;
    g->w_last = (int64_t)len;
    if (g->w_window >= 0) g->w_window = (int64_t)align8(len);  /* now the last entry */
}

/* standing_frame's answer into the consumer's ring, written only within handlers/standing.py
 * caught_up's first look: at most `window` bytes unread (the last entry written, w_window, or
 * w_room if larger); more, and Python decides (it raises writer_waiting and holds the fetch). */
static void answer_standing(eb_grant *g, const char *b, uint64_t n, int64_t count) {
    eb_ring *W = (eb_ring *)g->w_ring;
    uint64_t unread = __atomic_load_n(U64AT(W->hdr, EB_OFF_HEAD), __ATOMIC_RELAXED) -
                      __atomic_load_n(U64AT(W->hdr, EB_OFF_TAIL), __ATOMIC_ACQUIRE);
    int64_t room = g->w_window < 0 ? 0 : (g->w_window > g->w_room ? g->w_window : g->w_room);
    if (unread > (uint64_t)room)
        return;
    char f[EB_PLANE_ANSWER_MAX];
    uint64_t len = standing_frame(g, b, n, f);
    if (len == 0 || eb_write(W, f, (uint32_t)len, g->w_efd) != 1) return;
    standing_answered(g, n, count, len, 1);
}

/* Take frames from buf[start:len] (whole request frames, as eb_read copied them) until one must
 * go to Python. resp: the link's response ring (an eb_ring *, typed void * so that the _ring
 * module's pointers pass); efd_data: its reader's eventfd; resp NULL: a socket connection's
 * frames, answered into c->out (sockplane.c). Returns where Python goes on. */
int64_t eb_plane_produce(char *buf, int64_t start, int64_t len, eb_grant **grants, int ng,
                         void *resp, int efd_data, eb_plane_call *c) {
    eb_ring *R = (eb_ring *)resp;
    int64_t at = start;
    c->why = EB_PLANE_END;
    while (at < len) {
        uint32_t flen;
        uint16_t api, ver, tl;
        uint32_t corr;
        if (len - at < 14) { c->why = EB_PLANE_OTHER; break; }
        memcpy(&flen, buf + at, 4);
        memcpy(&api, buf + at + 4, 2);
        memcpy(&ver, buf + at + 6, 2);
        memcpy(&corr, buf + at + 8, 4);
        if (flen < 10 || (int64_t)flen + 4 > len - at || api != EB_API_PRODUCE || ver != 0) {
            c->why = EB_PLANE_OTHER;
            break;
        }
        const char *body = buf + at + 12;
        int64_t blen = (int64_t)flen - 8;
        memcpy(&tl, body, 2);
        if (2 + (int64_t)tl + 9 > blen) { c->why = EB_PLANE_OTHER; break; }
        int32_t part, bl;
        int8_t acks;
        memcpy(&part, body + 2 + tl, 4);
        memcpy(&acks, body + 2 + tl + 4, 1);
        memcpy(&bl, body + 2 + tl + 5, 4);
        if (bl < 0 || 2 + (int64_t)tl + 9 + bl != blen) { c->why = EB_PLANE_OTHER; break; }
        eb_grant *g = find_grant(grants, ng, body + 2, tl, part);
        if (g == NULL) { c->why = EB_PLANE_NO_GRANT; break; }
        if (acks != 0 && acks != 1) { c->why = EB_PLANE_ACKS; break; }
        char *b = (char *)body + 2 + tl + 9;
        uint64_t n = (uint64_t)bl;
        if (g->n >= EB_PLANE_BATCHES) { c->why = EB_PLANE_FULL; break; }
        if (n < 64 || (uint8_t)b[25] != 0 || (uint8_t)b[55] != 0xFF) { c->why = EB_PLANE_BATCH; break; }
        /* Every decline that needs no record count comes before the batch's check: Python's path
         * checks a batch it is handed itself (CRC included), so a check here first would be a
         * second CRC of every batch that then goes to Python. With the benchmark's 256 KiB
         * batches and the 4 KiB index interval that was every other batch (an index entry due). */
        if (c->budget - (int64_t)n < 0) { c->why = EB_PLANE_BUDGET; break; }
        /* an index entry due is noted for the sync-back, while it has room (and the writers) */
        int index_due = g->bytes_since_index >= g->index_interval;
        if ((index_due && (!g->index_ok || g->ix_n >= EB_PLANE_INDEX_MAX))
                || g->first_append_time < 0 || g->seg_size == 0) {
            c->why = EB_PLANE_INDEX;
            break;
        }
        int64_t now = wall_ms();
        int64_t atime = now > g->max_append_time ? now : g->max_append_time;
        int64_t base = g->log_end;
        if (g->seg_size + (int64_t)n > g->segment_bytes || atime - g->first_append_time > g->segment_ms) {
            c->why = EB_PLANE_ROLL;
            break;
        }
        uint32_t alen = 4 + 6 + 2 + tl + 28;
        if (acks == 1 && !(R != NULL ? eb_can_write(R, alen) : c->out_len + alen <= c->out_cap)) {
            c->why = EB_PLANE_RING;
            break;
        }
        int64_t count = eb_check_batch(b, n, (uint64_t)g->max_message_bytes, 0);
        if (count <= 0) { c->why = EB_PLANE_BATCH; break; }  /* refused, or no zlib here */
        if (base + count - 1 - g->seg_base > EB_U32_MAX) { c->why = EB_PLANE_ROLL; break; }
        memcpy(b, &base, 8);
        memcpy(b + 8, &atime, 8);
        /* one write for the whole batch, nearly always (Segment.append_batch's) */
        uint64_t done = 0;
        int failed = 0;
        while (done < n) {
            ssize_t w = write(g->fd, b + done, n - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) { failed = w < 0 && errno ? errno : EIO; break; }  /* before ftruncate */
            done += (uint64_t)w;
        }
        if (failed) {
            g->write_errno = failed;
            /* O_APPEND: cut back to where the batch began, and the next write goes there */
            if (done && ftruncate(g->fd, (off_t)g->seg_size) != 0) g->cut_failed = 1;
            c->why = EB_PLANE_WRITE;
            break;
        }
        g->rel[g->n % EB_PLANE_RECENT] = base - g->seg_base;
        g->pos[g->n % EB_PLANE_RECENT] = g->seg_size;
        g->n++;
        if (index_due) {  /* Segment.note_batch's entry: this batch's offset, position, time */
            g->ix_rel[g->ix_n] = base - g->seg_base;
            g->ix_pos[g->ix_n] = g->seg_size;
            g->ix_time[g->ix_n] = atime;
            g->ix_n++;
            g->bytes_since_index = 0;
        }
        g->seg_size += (int64_t)n;
        g->bytes_since_index += (int64_t)n;
        g->log_end = base + count;
        g->max_append_time = atime;
        g->records += count;
        g->bytes += (int64_t)n;
        g->last_at = b - buf;
        g->last_len = (int64_t)n;
        if (n <= EB_PLANE_TAIL) {
            memcpy(g->tail, b, n);
            g->tail_len = (int64_t)n;
        } else {
            g->tail_len = -1;
        }
        c->budget -= (int64_t)n;
        c->frames++;
        at += 4 + (int64_t)flen;
        if (g->w_held) {  /* held by Python: looked at, as may_answer looks, never answered here */
            if (!g->w_ready) g->w_ready = sock_read_up(g->w_sock);
        } else if (g->w_hold) {  /* held in C (sockplane.c): kept, answered once read */
            hold_more(g, b, n, count, c);
        } else if (g->w_offset == base && (int64_t)n >= g->w_min_bytes) {
            /* first: the consumer's latency is the one measured */
            if (g->w_ring != NULL && g->w_ring != resp)
                answer_standing(g, b, n, count);
            else if (g->w_ring == NULL && g->w_sock >= 0)
                answer_standing_sock(g, b, n, count, c);
        }
        if (acks == 1) {
            char a[4 + 6 + 2 + EB_PLANE_TOPIC_MAX + 28];
            uint32_t u32 = alen - 4;
            int16_t err = 0;
            memcpy(a, &u32, 4);
            memcpy(a + 4, &corr, 4);
            memcpy(a + 8, &err, 2);
            memcpy(a + 10, &tl, 2);
            memcpy(a + 12, g->topic, tl);
            char *o = a + 12 + tl;
            memcpy(o, &part, 4);
            memcpy(o + 4, &base, 8);
            memcpy(o + 12, &atime, 8);
            memcpy(o + 20, &g->log_start, 8);
            if (R != NULL) {
                eb_write(R, a, alen, efd_data);  /* room was checked; only this thread writes */
            } else {  /* a socket's: sent after the call's frames (sockplane.c) */
                memcpy(c->out + c->out_len, a, alen);
                c->out_len += alen;
            }
            c->answers++;
        }
    }
    return at;
}

/* The whole wake-up in one call: take frames one at a time from the link's request ring (copied
 * out first, so that a client rewriting its ring cannot change a batch between its check and its
 * write) into scratch, and serve each with eb_plane_produce, up to max_frames. Returns 0 when it
 * stopped without consuming anything it could not serve (c->why: the ring is empty or holds only
 * padding, the next frame is larger than scratch, the ring is inconsistent: Python's own read
 * then decides), or the length of the one frame it consumed and could not serve, which is in
 * scratch[0:len] for Python to dispatch. */
int64_t eb_plane_ring(void *req, int efd_space, char *scratch, uint64_t cap, uint32_t max_frames,
                      eb_grant **grants, int ng, void *resp, int efd_data, eb_plane_call *c) {
    eb_ring *Q = (eb_ring *)req;
    for (uint32_t i = 0; i < max_frames; i++) {
        int64_t n = eb_available(Q, cap, 1);
        if (n < 0) { c->why = EB_PLANE_RING_BAD; return 0; }
        if (n == 0) {  /* empty; or padding only, which Python's read consumes */
            c->why = eb_readable(Q) ? EB_PLANE_OTHER : EB_PLANE_RING_END;
            return 0;
        }
        if ((uint64_t)n > cap) { c->why = EB_PLANE_RING_BIG; return 0; }
        if (eb_read(Q, scratch, cap, 1, efd_space) != n) { c->why = EB_PLANE_RING_BAD; return 0; }
        if (eb_plane_produce(scratch, 0, n, grants, ng, resp, efd_data, c) != n) return n;
    }
    c->why = EB_PLANE_END;
    return 0;
}
