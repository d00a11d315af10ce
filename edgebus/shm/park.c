/* The parked loop (docs/ARCHITECTURE.md, "The C data plane", "Parked in C"): the loop's wait for
 * its next event, done in C, serving granted shm links' wake-ups there without returning to
 * Python.
 *
 * Compiled after ring.c, records.c and plane.c in one translation unit (_plane_build.py).
 *
 * Every shm link's eventfd (efd_sup) sits in one epoll set of its own, the park set, whose fd is
 * itself watched by the loop's epoll. The loop, with nothing due before its next deadline, calls
 * eb_park_wait instead of epoll.poll: it waits on the loop's epoll; while the only thing ready is
 * the park set, it takes the ready links from it and serves each one Python marked `fast` (its
 * grants checked just before the call) with eb_plane_ring, as the link's wake-up would, then
 * announces sleep on the ring again (eb_prepare_sleep_data: flag, fence, re-check). It returns
 * to Python as soon as anything else is ready (the loop's events are copied out, nothing lost),
 * the deadline passes, a signal interrupts the wait, or a link needs Python: not fast, a frame
 * the plane declined, a grant's sync-back due (eb_plane_ring's per-call room used up), frames
 * coming close enough together to be worth polling (the Arrivals average, spin.py), or an
 * append someone else waits on that the call did not answer.
 *
 * Single writer: the call runs on the loop thread in place of its epoll wait, so while it runs no
 * Python of the supervisor's runs on that thread, and no other thread appends or rolls (the
 * fsync and cleaner threads only work on what the loop handed them). Python brings its view up to
 * date from the grants' and links' counters (sync-back) first thing after the call returns, and
 * re-checks every grant before the next one. */

#include <sys/epoll.h>

#define EB_PARK_EVENTS 64
#define EB_PARK_OUT 64

/* Why eb_park_wait returned (eb_park.why). */
#define EB_PARK_LOOP 0      /* the loop's epoll has events (copied into ev_fd/ev_mask) */
#define EB_PARK_TIMEOUT 1   /* the deadline passed */
#define EB_PARK_PYTHON 2    /* links need Python (out[0:nout]) */
#define EB_PARK_EINTR 3     /* a signal: Python runs its handlers */
#define EB_PARK_ERROR 4     /* epoll_wait failed otherwise (errno in err) */

/* Why a link went to Python (eb_park.to_py[], statistics). */
#define EB_TO_PY_NOT_FAST 0   /* Python did not mark it fast */
#define EB_TO_PY_DECLINED 1   /* a frame the plane declined (in scratch) */
#define EB_TO_PY_RING 2       /* padding, a frame larger than scratch, an inconsistent ring */
#define EB_TO_PY_AFTER 3      /* an append someone else waits on */
#define EB_TO_PY_SPIN 4       /* frames close together: Python polls the ring */
#define EB_TO_PY_STANDING 5   /* the standing fetch was not answered up to the log end */
#define EB_TO_PY_N 6

typedef struct {
    /* set by Python (attach, then before each call) */
    void *req, *resp;          /* the link's rings (eb_ring *) */
    int32_t efd_space, efd_data;
    int32_t id;                /* Python's key for the link */
    int32_t fast;              /* 1: its grants were checked; serve its wake-ups here */
    int32_t ng;
    int32_t py_after;          /* 1: an append here must be told to Python (on_append) */
    eb_grant **grants;
    /* kept by the call, read and zeroed by Python's sync-back */
    int64_t frames, answers;   /* PRODUCEs taken and answers written since the last sync */
    int64_t arr_last, arr_gap; /* spin.py Arrivals: last arrival (monotonic ns), average gap */
    int32_t queued;            /* 1: in out[] already */
} eb_park_link;

typedef struct {
    int32_t main_fd;           /* the loop's epoll */
    int32_t park_fd;           /* the park set */
    int64_t deadline_ns;       /* CLOCK_MONOTONIC; -1: none */
    int64_t budget;            /* the disk guard's, as eb_plane_call's */
    int64_t spin_gap_ns;       /* tuning.SPIN_GAP_NS: a link this busy goes back to Python */
    int64_t gap_cap_ns;        /* spin.GAP_CAP_NS */
    char *scratch;             /* eb_plane_ring's copy of the frame it serves */
    uint64_t cap;
    uint32_t max_frames;
    /* out */
    int32_t why;
    int32_t err;
    int32_t nev;               /* the loop's events */
    int32_t ev_fd[EB_PARK_EVENTS];
    uint32_t ev_mask[EB_PARK_EVENTS];
    int32_t nout;              /* links Python must serve, in the order their wake-ups came */
    int32_t out[EB_PARK_OUT];
    int32_t k_link;            /* the link whose declined frame is in scratch[0:k] (-1: none) */
    int64_t k;
    int64_t served;            /* wake-ups served here (statistics) */
    int64_t to_py[EB_TO_PY_N]; /* links handed to Python, by reason (statistics) */
} eb_park;

/* Add a link's eventfd to the park set (edge-triggered: each write is one event). */
int eb_park_add(int park_fd, int efd, eb_park_link *l) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLET;
    ev.data.ptr = l;
    return epoll_ctl(park_fd, EPOLL_CTL_ADD, efd, &ev);
}

int eb_park_remove(int park_fd, int efd) {
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    return epoll_ctl(park_fd, EPOLL_CTL_DEL, efd, &ev);
}

static void to_python(eb_park *P, eb_park_link *l, int why) {
    if (l->queued) return;
    P->to_py[why]++;
    l->queued = 1;
    P->out[P->nout++] = l->id;
}

/* One wake-up of a fast link, as ShmLink.__call__ and service would serve it when every frame is
 * one the plane takes: frames served until the ring is empty, then sleep announced again.
 * Returns 1 when the link must go to Python instead (it is then queued in out[]). */
static int serve_link(eb_park *P, eb_park_link *l) {
    /* zeroed: no answer buffers (out, rest NULL), so a socket consumer's standing fetch is
     * left to Python's on_append after the sync-back (sockplane.c declines without rest) */
    eb_plane_call c;
    memset(&c, 0, sizeof c);
    for (;;) {
        c.budget = P->budget;
        c.frames = c.answers = 0;
        c.why = EB_PLANE_END;
        int64_t k = eb_plane_ring(l->req, l->efd_space, P->scratch, P->cap, P->max_frames,
                                  l->grants, l->ng, l->resp, l->efd_data, &c);
        P->budget = c.budget;
        l->frames += c.frames;
        l->answers += c.answers;
        if (c.frames) {
            int64_t now = now_ns();
            if (l->arr_last) {
                int64_t g = now - l->arr_last;
                if (g > P->gap_cap_ns) g = P->gap_cap_ns;
                l->arr_gap += (g - l->arr_gap) / 4;
            }
            l->arr_last = now;
        }
        if (k) {  /* a frame the plane declined, consumed: Python dispatches it, then reads on */
            P->k_link = l->id;
            P->k = k;
            to_python(P, l, EB_TO_PY_DECLINED);
            return 1;
        }
        /* max_frames taken: read on. Anything else but an empty ring needs Python's read
         * (padding, a frame larger than scratch, an inconsistent ring). */
        if (c.why == EB_PLANE_END) continue;
        if (c.why != EB_PLANE_RING_END) { to_python(P, l, EB_TO_PY_RING); return 1; }
        if (c.frames) {
            if (l->py_after) { to_python(P, l, EB_TO_PY_AFTER); return 1; }
            if (l->arr_gap <= P->spin_gap_ns) { to_python(P, l, EB_TO_PY_SPIN); return 1; }
            for (int i = 0; i < l->ng; i++) {
                eb_grant *g = l->grants[i];
                /* a standing fetch the call did not answer up to the end: push decides */
                if (g->n && g->w_ring != NULL && g->w_offset != g->log_end) {
                    to_python(P, l, EB_TO_PY_STANDING);
                    return 1;
                }
            }
        }
        /* empty: announce sleep, fence, re-check (frames that raced in are served now) */
        if (!eb_prepare_sleep_data((eb_ring *)l->req)) return 0;
    }
}

/* Take the park set's ready links: serve the fast ones, queue the others for Python. After a
 * declined frame fills scratch, every later ready link goes to Python unserved. (out[] cannot
 * overflow: it is empty on entry, and each of at most EB_PARK_EVENTS events adds one link.) */
static void drain_park(eb_park *P) {
    struct epoll_event evs[EB_PARK_EVENTS];
    int n = epoll_wait(P->park_fd, evs, EB_PARK_EVENTS, 0);
    for (int i = 0; i < n; i++) {
        eb_park_link *l = (eb_park_link *)evs[i].data.ptr;
        if (!l->fast || P->k_link >= 0 || l->queued) { to_python(P, l, EB_TO_PY_NOT_FAST); continue; }
        P->served++;
        serve_link(P, l);
    }
}

/* The loop's wait (see the top of this file). Python reads why, the loop's events, out[] and
 * the scratch frame, then syncs back every link's counters. */
void eb_park_wait(eb_park *P) {
    struct epoll_event evs[EB_PARK_EVENTS];
    P->nev = P->nout = 0;
    P->k_link = -1;
    P->k = 0;
    for (;;) {
        int timeout = -1;
        if (P->deadline_ns >= 0) {
            int64_t left = P->deadline_ns - now_ns();
            if (left <= 0) { P->why = EB_PARK_TIMEOUT; return; }
            timeout = (int)((left + 999999) / 1000000);  /* rounded up, as epoll.poll does */
        }
        int n = epoll_wait(P->main_fd, evs, EB_PARK_EVENTS, timeout);
        if (n < 0) {
            P->err = errno;
            P->why = errno == EINTR ? EB_PARK_EINTR : EB_PARK_ERROR;
            return;
        }
        if (n == 0) continue;  /* the deadline is re-checked above */
        int other = 0;
        for (int i = 0; i < n; i++)
            if (evs[i].data.fd != P->park_fd) other = 1;
        if (other) {
            /* anything else: back to Python with the events as epoll gave them (the park set,
             * if among them, is drained by its own callback there) */
            for (int i = 0; i < n; i++) {
                P->ev_fd[i] = evs[i].data.fd;
                P->ev_mask[i] = evs[i].events;
            }
            P->nev = n;
            P->why = EB_PARK_LOOP;
            return;
        }
        drain_park(P);
        if (P->nout) { P->why = EB_PARK_PYTHON; return; }
    }
}

/* The park set's callback when Python's own wait saw it ready (a busy turn): the same serving,
 * without waiting. */
void eb_park_drain(eb_park *P) {
    P->nev = P->nout = 0;
    P->k_link = -1;
    P->k = 0;
    drain_park(P);
    P->why = P->nout ? EB_PARK_PYTHON : EB_PARK_LOOP;
}
