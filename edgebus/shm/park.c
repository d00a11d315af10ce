/* The parked loop (docs/ARCHITECTURE.md, "The C data plane", "Parked in C"): the loop's wait
 * for its next event, done in C, serving granted shm links' wake-ups and granted Unix-socket
 * connections' reads there without returning to Python.
 *
 * Compiled after ring.c, records.c, plane.c and sockplane.c in one translation unit
 * (_plane_build.py).
 *
 * C waits on the loop's own epoll (one epoll_wait per wake-up): every shm link's eventfd
 * (efd_sup, edge-triggered) and every connection's socket are registered there by Python as
 * ever, and byfd[] tells which ready descriptors are links C may serve (Park.add, add_sock).
 * The loop, with nothing due before its next deadline, calls eb_park_wait instead of
 * epoll.poll. For each ready descriptor: a link Python marked `fast` (its grants checked just
 * before the call) is served as its wake-up would be (a ring: eb_plane_ring, then sleep
 * announced again, eb_prepare_sleep_data: flag, fence, re-check; a socket readable and nothing
 * else: eb_plane_sock_read, one recv, the frames appended and answered, the answers sent).
 * Anything else ready (Python's descriptors, a link not fast) is copied out for the loop's
 * callbacks, nothing lost. It returns to Python when any of that happened, the deadline passes,
 * a signal interrupts the wait, or a link needs Python: a ring link not fast, a frame the plane
 * declined, a grant's sync-back due (per-call room used up), frames coming close enough
 * together to be worth polling (the Arrivals average, spin.py), an append someone else waits
 * on that the call did not answer; a socket read C could not finish (EOF or an error, a frame
 * it does not serve or half a frame, answers the socket did not take all of, a failed write),
 * whose state it leaves for Python (s_fd, s_got, s_at, and the call's out/sent/why). Socket
 * consumers' fetches C holds itself in the wait (sockplane.c) are looked at on their schedule:
 * the epoll timeout is the earlier of the deadline and the next look.
 *
 * Single writer: the call runs on the loop thread in place of its epoll wait, so while it runs no
 * Python of the supervisor's runs on that thread, and no other thread appends or rolls (the
 * fsync and cleaner threads only work on what the loop handed them). Python brings its view up to
 * date from the grants' and links' counters (sync-back) first thing after the call returns, and
 * re-checks every grant before the next one. */

#include <sys/epoll.h>

#define EB_PARK_EVENTS 64
#define EB_PARK_OUT 64
#define EB_PARK_FDS 4096    /* descriptors below this may be links (a higher one is Python's) */
#define EB_PARK_HELD 64     /* socket consumers' fetches held in C in one wait, at most */

/* Why eb_park_wait returned (eb_park.why). */
#define EB_PARK_LOOP 0      /* the loop's epoll has events for Python (copied into ev_fd/ev_mask) */
#define EB_PARK_TIMEOUT 1   /* the deadline passed */
#define EB_PARK_PYTHON 2    /* links need Python (out[0:nout], s_fd, or a sync-back: py) */
#define EB_PARK_EINTR 3     /* a signal: Python runs its handlers */
#define EB_PARK_ERROR 4     /* epoll_wait failed otherwise (errno in err) */

/* Why a link went to Python (eb_park.to_py[], statistics). */
#define EB_TO_PY_NOT_FAST 0   /* Python did not mark it fast */
#define EB_TO_PY_DECLINED 1   /* a frame the plane declined (in scratch) */
#define EB_TO_PY_RING 2       /* padding, a frame larger than scratch, an inconsistent ring */
#define EB_TO_PY_AFTER 3      /* an append someone else waits on */
#define EB_TO_PY_SPIN 4       /* frames close together: Python polls the ring */
#define EB_TO_PY_STANDING 5   /* the standing fetch was not answered up to the log end */
#define EB_TO_PY_SOCKET 6     /* a socket read C could not finish (s_fd) */
#define EB_TO_PY_N 7

typedef struct {
    /* set by Python (add / add_sock, then before each call) */
    void *req, *resp;          /* a ring link's rings (eb_ring *) */
    int32_t efd_space, efd_data;
    int32_t id;                /* Python's key for the link */
    int32_t fast;              /* 1: its grants were checked; serve its wake-ups here */
    int32_t ng;
    int32_t py_after;          /* 1: an append here must be told to Python (on_append) */
    eb_grant **grants;
    int32_t sock;              /* 1: a Unix-socket connection's (fd: its socket) */
    int32_t fd;                /* the descriptor byfd[] holds it under (efd_sup, or the socket) */
    /* kept by the call, read and zeroed by Python's sync-back */
    int64_t frames, answers;   /* PRODUCEs taken and answers written since the last sync */
    int64_t arr_last, arr_gap; /* spin.py Arrivals: last arrival (monotonic ns), average gap */
    int32_t queued;            /* 1: in out[] already */
} eb_park_link;

typedef struct {
    int32_t main_fd;           /* the loop's epoll */
    int64_t deadline_ns;       /* CLOCK_MONOTONIC; -1: none */
    int64_t budget;            /* the disk guard's, as eb_plane_call's */
    int64_t spin_gap_ns;       /* tuning.SPIN_GAP_NS: a link this busy goes back to Python */
    int64_t gap_cap_ns;        /* spin.GAP_CAP_NS */
    char *scratch;             /* eb_plane_ring's copy of the frame it serves */
    uint64_t cap;
    uint32_t max_frames;
    /* The call every serve uses (the socket plane's, with its out and rest buffers, once it has
     * them: rests of standing answers a consumer's socket took only part of gather in its rest
     * buffer for Python's sync-back; rest NULL: socket consumers are left to Python). */
    eb_plane_call *call;
    char *sbuf;                /* the socket plane's read buffer (NULL: no socket is served) */
    int64_t scap;
    /* C's own holds of socket consumers' fetches (sockplane.c): the call's list during a wait,
     * and the looks' timing Python gives (standing.py RECHECK_S, SOCKET_RECHECK_MAX_S) */
    int64_t hold_ns, hold_max_ns;
    eb_grant *held[EB_PARK_HELD];
    eb_park_link *byfd[EB_PARK_FDS];  /* the loop's descriptors that are links (NULL: Python's) */
    /* out */
    int32_t why;
    int32_t err;
    int32_t py;                /* 1: a sync-back is due before anything else (to_py AFTER, ...) */
    int32_t nev;               /* the loop's events for Python */
    int32_t ev_fd[EB_PARK_EVENTS];
    uint32_t ev_mask[EB_PARK_EVENTS];
    int32_t nout;              /* ring links Python must serve, in the order their wake-ups came */
    int32_t out[EB_PARK_OUT];
    int32_t k_link;            /* the link whose declined frame is in scratch[0:k] (-1: none) */
    int64_t k;
    int32_t s_fd;              /* the socket whose read Python finishes (-1: none) */
    int64_t s_got, s_at;       /* eb_plane_sock_read's return and where Python goes on */
    int64_t served;            /* ring wake-ups served here (statistics) */
    int64_t sock_reads;        /* socket reads served here (statistics) */
    int64_t to_py[EB_TO_PY_N]; /* links handed to Python, by reason (statistics) */
} eb_park;

static void to_python(eb_park *P, eb_park_link *l, int why) {
    if (l->queued) return;
    P->to_py[why]++;
    l->queued = 1;
    P->out[P->nout++] = l->id;
}

static void for_python(eb_park *P, int fd, uint32_t mask) {
    P->ev_fd[P->nev] = fd;
    P->ev_mask[P->nev] = mask;
    P->nev++;
}

/* Whether a standing fetch armed on one of the link's grants was not answered up to the end of
 * what the calls appended: then on_append (the sync-back's) decides. */
static int standing_behind(eb_park_link *l) {
    for (int i = 0; i < l->ng; i++) {
        eb_grant *g = l->grants[i];
        if (!g->n) continue;
        if (g->w_held) {  /* a held socket consumer: Python only once it has read */
            if (g->w_ready) return 1;
            continue;
        }
        if (g->w_hold) continue;  /* held in C: answered here once read (sockplane.c) */
        if ((g->w_ring != NULL || g->w_sock >= 0) && g->w_offset != g->log_end) return 1;
    }
    return 0;
}

static void arrived(eb_park *P, eb_park_link *l) {
    int64_t now = now_ns();
    if (l->arr_last) {
        int64_t g = now - l->arr_last;
        if (g > P->gap_cap_ns) g = P->gap_cap_ns;
        l->arr_gap += (g - l->arr_gap) / 4;
    }
    l->arr_last = now;
}

/* One wake-up of a fast ring link, as ShmLink.__call__ and service would serve it when every
 * frame is one the plane takes: frames served until the ring is empty, then sleep announced
 * again. Returns 1 when the link must go to Python instead (it is then queued in out[]). */
static int serve_link(eb_park *P, eb_park_link *l) {
    eb_plane_call *c = P->call;
    for (;;) {
        c->budget = P->budget;
        c->frames = c->answers = 0;
        c->why = EB_PLANE_END;
        int64_t k = eb_plane_ring(l->req, l->efd_space, P->scratch, P->cap, P->max_frames,
                                  l->grants, l->ng, l->resp, l->efd_data, c);
        P->budget = c->budget;
        l->frames += c->frames;
        l->answers += c->answers;
        if (c->frames) arrived(P, l);
        if (k) {  /* a frame the plane declined, consumed: Python dispatches it, then reads on */
            P->k_link = l->id;
            P->k = k;
            to_python(P, l, EB_TO_PY_DECLINED);
            return 1;
        }
        /* max_frames taken: read on. Anything else but an empty ring needs Python's read
         * (padding, a frame larger than scratch, an inconsistent ring). */
        if (c->why == EB_PLANE_END) continue;
        if (c->why != EB_PLANE_RING_END) { to_python(P, l, EB_TO_PY_RING); return 1; }
        if (c->frames) {
            if (l->py_after) { to_python(P, l, EB_TO_PY_AFTER); return 1; }
            if (l->arr_gap <= P->spin_gap_ns) { to_python(P, l, EB_TO_PY_SPIN); return 1; }
            if (standing_behind(l)) { to_python(P, l, EB_TO_PY_STANDING); return 1; }
        }
        /* empty: announce sleep, fence, re-check (frames that raced in are served now) */
        if (!eb_prepare_sleep_data((eb_ring *)l->req)) return 0;
    }
}

/* One read of a fast socket link, as Connection.on_event's SockLink.read would do it: one
 * recv, its frames appended and answered, the answers sent. Whatever C cannot finish is left
 * for Python (s_fd: the read buffer from s_at to s_got, the call's unsent answers and why). */
static void serve_sock(eb_park *P, eb_park_link *l) {
    eb_plane_call *c = P->call;
    int64_t at = 0;
    c->budget = P->budget;
    c->frames = c->answers = 0;
    c->why = EB_PLANE_END;
    int64_t got = eb_plane_sock_read(l->fd, P->sbuf, 0, P->scap, l->grants, l->ng, c, &at);
    P->budget = c->budget;
    l->frames += c->frames;
    l->answers += c->answers;
    if (got == -EAGAIN || got == -EWOULDBLOCK) return;  /* nothing after all (level-triggered) */
    P->sock_reads++;
    if (got <= 0 || at < got || c->sent != c->out_len || c->why == EB_PLANE_WRITE) {
        P->to_py[EB_TO_PY_SOCKET]++;
        P->s_fd = l->fd;
        P->s_got = got;
        P->s_at = at;
        return;
    }
    if (c->frames) {
        if (l->py_after) { P->to_py[EB_TO_PY_AFTER]++; P->py = 1; return; }
        if (standing_behind(l)) { P->to_py[EB_TO_PY_STANDING]++; P->py = 1; }
    }
}

/* The loop's ready descriptors: links C may serve are served, the rest copied out for Python.
 * After a declined frame fills scratch, every later ready ring link goes to Python unserved;
 * after a socket read left for Python, every later link, ring or socket: the read buffer and
 * the call (its why, unsent answers) are that read's until SockLink.resume has them. A serve
 * that left the rest of a standing answer a consumer's socket took only part of returns to
 * Python, which queues it at once (Park._after), instead of at the next unrelated return.
 * (out[] and ev[] cannot overflow: both are empty on entry, and each of at most
 * EB_PARK_EVENTS events adds one entry to one of them.) */
static void take_events(eb_park *P, struct epoll_event *evs, int n) {
    for (int i = 0; i < n; i++) {
        int fd = evs[i].data.fd;
        uint32_t m = evs[i].events;
        eb_park_link *l = fd >= 0 && fd < EB_PARK_FDS ? P->byfd[fd] : NULL;
        if (l == NULL) { for_python(P, fd, m); continue; }
        if (!l->sock) {
            if (!l->fast || P->k_link >= 0 || P->s_fd >= 0 || l->queued) {
                to_python(P, l, EB_TO_PY_NOT_FAST);
                continue;
            }
            P->served++;
            serve_link(P, l);
        } else if (!l->fast || m != EPOLLIN || P->s_fd >= 0 || P->sbuf == NULL) {
            P->to_py[EB_TO_PY_NOT_FAST]++;
            for_python(P, fd, m);  /* Connection.on_event, as ever */
        } else {
            serve_sock(P, l);
        }
        if (P->call->rest_len) P->py = 1;
    }
}

/* The loop's wait (see the top of this file). Python reads why, the loop's events, out[], the
 * scratch frame and the socket left to it, then syncs back every link's counters. */
static void park_wait(eb_park *P) {
    struct epoll_event evs[EB_PARK_EVENTS];
    eb_plane_call *c = P->call;
    for (;;) {
        int timeout = -1;
        int64_t now = now_ns();
        if (P->deadline_ns >= 0 && now >= P->deadline_ns) { P->why = EB_PARK_TIMEOUT; return; }
        int64_t until = P->deadline_ns;
        if (c->nheld) {  /* holds in C: each look when due (held_looks moves it on) */
            int py = 0;
            int64_t next = held_looks(c, now, &py);
            if (py) { P->py = 1; P->to_py[EB_TO_PY_STANDING]++; }
            if (c->rest_len) P->py = 1;  /* (an answer's rest: queued by Python at once) */
            if (P->py) { P->why = EB_PARK_PYTHON; return; }
            if (next >= 0 && (until < 0 || next < until)) until = next;
        }
        if (until >= 0)  /* rounded up, as epoll.poll does */
            timeout = (int)((until - now + 999999) / 1000000);
        int n = epoll_wait(P->main_fd, evs, EB_PARK_EVENTS, timeout);
        if (n < 0) {
            P->err = errno;
            P->why = errno == EINTR ? EB_PARK_EINTR : EB_PARK_ERROR;
            return;
        }
        if (n == 0) continue;  /* the deadline and the looks are re-checked above */
        take_events(P, evs, n);
        if (P->nev) { P->why = EB_PARK_LOOP; return; }
        if (P->nout || P->py || P->s_fd >= 0) { P->why = EB_PARK_PYTHON; return; }
    }
}

void eb_park_wait(eb_park *P) {
    eb_plane_call *c = P->call;
    P->nev = P->nout = P->py = 0;
    P->k_link = -1;
    P->k = 0;
    P->s_fd = -1;
    P->s_got = P->s_at = 0;
    /* holds in C only within this wait: its sync-back ends any still on (Python's from then) */
    c->held = P->held;
    c->held_cap = EB_PARK_HELD;
    c->nheld = 0;
    c->hold_ns = P->hold_ns;
    c->hold_max_ns = P->hold_max_ns;
    park_wait(P);
    c->held = NULL;
}
