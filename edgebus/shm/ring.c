/* edgebus shared-memory ring: single producer, single consumer, whole frames.
 *
 * The byte layout is docs/FORMAT.md section 6 ("Shared-memory ring header"); the offsets below
 * mirror edgebus/format.py (RING_*), and tests/test_format_doc.py checks that the three agree.
 *
 * Memory ordering (C11 __atomic builtins, correct on ARM as well as x86):
 *   - head is stored only by the writer, with RELEASE after the frame bytes are copied in; the
 *     reader loads it with ACQUIRE before copying frame bytes out. So a reader that sees a head
 *     value also sees every byte written below it.
 *   - tail is stored only by the reader, with RELEASE after the frame bytes are copied out; the
 *     writer loads it with ACQUIRE before overwriting space below it. So the writer never reuses
 *     space the reader is still copying from (on ARM, loads may otherwise pass later stores).
 *   - Each side reads its own counter RELAXED: nobody else stores it.
 *   - Sleeping (the lost wake-up problem): the reader stores reader_waiting = 1, runs a SEQ_CST
 *     fence, and only then re-loads head; the writer stores head, runs a SEQ_CST fence, and only
 *     then exchanges reader_waiting with 0. With a full fence on both sides at least one of them
 *     sees the other's store: either the reader sees the new frame and does not sleep, or the
 *     writer sees the flag and signals the eventfd. The same holds for writer_waiting with the
 *     roles swapped (a writer waiting for space, a reader publishing tail).
 *     Exchange (not a plain load) makes exactly one party responsible for each wake-up.
 *
 * The reader of a ring written by an untrusted peer (the supervisor reading a client's request
 * ring) treats every shared byte as hostile: counters are bounds-checked, a frame length is read
 * once, and frames are copied out before anyone parses them, so the peer cannot change bytes the
 * supervisor has already validated.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>

#define EB_RING_MAGIC 0x47524245u /* "EBRG" as little-endian bytes */
#define EB_RING_VERSION 1
#define EB_OFF_MAGIC 0
#define EB_OFF_VERSION 4
#define EB_OFF_HEADER_SIZE 6
#define EB_OFF_CAPACITY 8
#define EB_OFF_MAX_FRAME 12
#define EB_OFF_HEAD 128
#define EB_OFF_WRITER_WAITING 136
#define EB_OFF_TAIL 256
#define EB_OFF_READER_WAITING 264
#define EB_HEADER_SIZE 384
#define EB_PAD_MARKER 0xFFFFFFFFu
#define EB_ALIGN 8u

#define U32AT(r, off) ((uint32_t *)((r) + (off)))
#define U64AT(r, off) ((uint64_t *)((r) + (off)))

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint64_t align8(uint64_t n) { return (n + EB_ALIGN - 1) & ~(uint64_t)(EB_ALIGN - 1); }

/* A ring as one process sees it. Sizes are private copies, never re-read from the shared header:
 * a hostile peer could rewrite the header, but not these. */
typedef struct {
    char *hdr;          /* the shared header (EB_HEADER_SIZE bytes), then the data area */
    uint32_t cap;       /* data bytes, a power of two */
    uint32_t max_frame; /* largest frame, u32 prefix included; at most cap / 2 */
} eb_ring;

#define cap_of(R) ((R)->cap)
#define data_of(R) ((R)->hdr + EB_HEADER_SIZE)

static void signal_fd(int fd) {
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t n;
        do { n = write(fd, &one, sizeof one); } while (n < 0 && errno == EINTR);
        /* EAGAIN means the counter is already huge: the peer is signalled anyway. */
    }
}

size_t eb_ring_size(uint32_t capacity) { return EB_HEADER_SIZE + (size_t)capacity; }

/* Capacity must be a power of two, at least 4 KiB. max_frame: largest frame (with its u32
 * length prefix) accepted; at most capacity / 2 so that one always fits in an empty ring. */
int eb_init(char *r, uint32_t capacity, uint32_t max_frame) {
    if (capacity < 4096 || (capacity & (capacity - 1)) != 0) return -1;
    if (max_frame > capacity / 2 || max_frame < 16) return -1;
    memset(r, 0, EB_HEADER_SIZE);
    *U32AT(r, EB_OFF_MAGIC) = EB_RING_MAGIC;
    *(uint16_t *)(r + EB_OFF_VERSION) = EB_RING_VERSION;
    *(uint16_t *)(r + EB_OFF_HEADER_SIZE) = EB_HEADER_SIZE;
    *U32AT(r, EB_OFF_CAPACITY) = capacity;
    *U32AT(r, EB_OFF_MAX_FRAME) = max_frame;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return 0;
}

/* 0 when the header is one this code can use with the given capacity (the mapped size). */
int eb_check(char *r, uint32_t capacity) {
    uint32_t magic = __atomic_load_n(U32AT(r, EB_OFF_MAGIC), __ATOMIC_ACQUIRE);
    if (magic != EB_RING_MAGIC) return -1;
    if (*(uint16_t *)(r + EB_OFF_VERSION) != EB_RING_VERSION) return -2;
    if (*(uint16_t *)(r + EB_OFF_HEADER_SIZE) != EB_HEADER_SIZE) return -3;
    if (*U32AT(r, EB_OFF_CAPACITY) != capacity) return -4;
    if (*U32AT(r, EB_OFF_MAX_FRAME) > capacity / 2) return -5;
    return 0;
}

/* Fill a private descriptor from a checked header. */
int eb_open(eb_ring *d, char *r, uint32_t capacity) {
    int rc = eb_check(r, capacity);
    if (rc) return rc;
    d->hdr = r;
    d->cap = capacity;
    d->max_frame = *U32AT(r, EB_OFF_MAX_FRAME);
    if (d->max_frame < 16) return -5;
    return 0;
}

uint64_t eb_head(eb_ring *d) { return __atomic_load_n(U64AT(d->hdr, EB_OFF_HEAD), __ATOMIC_ACQUIRE); }
uint64_t eb_tail(eb_ring *d) { return __atomic_load_n(U64AT(d->hdr, EB_OFF_TAIL), __ATOMIC_ACQUIRE); }

/* --- writer side ------------------------------------------------------------------------------ */

/* Bytes the writer must find free to place an entry of `need` bytes at head (padding included). */
static inline uint64_t space_needed(uint64_t head, uint32_t cap, uint64_t need) {
    uint64_t pos = head & (cap - 1);
    uint64_t to_end = cap - pos;
    return need <= to_end ? need : to_end + need;
}

/* 1 when a frame of n bytes (prefix included) fits now. */
int eb_can_write(eb_ring *R, uint32_t n) {
    uint32_t cap = cap_of(R);
    uint64_t head = __atomic_load_n(U64AT(R->hdr, EB_OFF_HEAD), __ATOMIC_RELAXED);
    uint64_t tail = __atomic_load_n(U64AT(R->hdr, EB_OFF_TAIL), __ATOMIC_ACQUIRE);
    return cap - (head - tail) >= space_needed(head, cap, align8(n));
}

/* Room for an entry of n bytes (prefix included, n <= max_frame) at head: where to put its bytes,
 * or NULL when it does not fit now (nothing written). *next gets the head to publish once they
 * are there (ring_publish). Writes the padding marker at the end of the data area when the entry
 * goes to its start: in space the reader does not look at until head is published. */
static inline char *ring_reserve(eb_ring *R, uint32_t n, uint64_t *next) {
    uint32_t cap = cap_of(R);
    uint64_t need = align8(n);
    uint64_t head = __atomic_load_n(U64AT(R->hdr, EB_OFF_HEAD), __ATOMIC_RELAXED);
    uint64_t tail = __atomic_load_n(U64AT(R->hdr, EB_OFF_TAIL), __ATOMIC_ACQUIRE);
    uint64_t pos = head & (cap - 1);
    uint64_t to_end = cap - pos;
    if (cap - (head - tail) < (need <= to_end ? need : to_end + need)) return NULL;
    char *d = data_of(R);
    if (need > to_end) {
        /* Padding marker: the reader skips to the start of the data area. */
        *U32AT(d, pos) = EB_PAD_MARKER;
        head += to_end;
        pos = 0;
    }
    *next = head + need;
    return d + pos;
}

/* Publish what ring_reserve placed (head with RELEASE: its bytes are visible before it), then
 * signal wake_fd when the reader had announced it was going to sleep (the fence: header
 * comment). */
static inline void ring_publish(eb_ring *R, uint64_t next, int wake_fd) {
    __atomic_store_n(U64AT(R->hdr, EB_OFF_HEAD), next, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(U32AT(R->hdr, EB_OFF_READER_WAITING), __ATOMIC_RELAXED) &&
        __atomic_exchange_n(U32AT(R->hdr, EB_OFF_READER_WAITING), 0, __ATOMIC_SEQ_CST))
        signal_fd(wake_fd);
}

/* Write one whole frame (its u32 length prefix included, as on the socket).
 * Returns 1 written, 0 no space now, -1 larger than max_frame, -2 prefix does not match n.
 * Signals wake_fd when the reader had announced it was going to sleep. */
int eb_write(eb_ring *R, const char *frame, uint32_t n, int wake_fd) {
    if (n > R->max_frame) return -1;
    if (n < 4) return -2;
    uint32_t declared;
    memcpy(&declared, frame, 4);
    if ((uint64_t)declared + 4 != n) return -2;
    uint64_t next;
    char *at = ring_reserve(R, n, &next);
    if (at == NULL) return 0;
    memcpy(at, frame, n);
    ring_publish(R, next, wake_fd);
    return 1;
}

/* Before a writer sleeps for space: announce it, fence, re-check. 1 = space is there now (do not
 * sleep; the flag is withdrawn), 0 = sleep on the space eventfd. */
int eb_prepare_sleep_space(eb_ring *R, uint32_t n) {
    __atomic_store_n(U32AT(R->hdr, EB_OFF_WRITER_WAITING), 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (eb_can_write(R, n)) {
        __atomic_store_n(U32AT(R->hdr, EB_OFF_WRITER_WAITING), 0, __ATOMIC_RELAXED);
        return 1;
    }
    return 0;
}

/* Spin (politely) until a frame of n bytes fits or spin_ns passes. 1 = fits. */
int eb_wait_space(eb_ring *R, uint32_t n, int64_t spin_ns) {
    if (eb_can_write(R, n)) return 1;
    int64_t deadline = now_ns() + spin_ns;
    for (unsigned i = 1;; i++) {
        cpu_relax();
        if (eb_can_write(R, n)) return 1;
        if ((i & 63) == 0) {
            if (now_ns() >= deadline) return 0;
            sched_yield();
        }
    }
}

/* --- reader side ------------------------------------------------------------------------------ */

/* Walk whole frames from tail without consuming them. Returns the bytes they take when copied
 * out (4 + length each), stopping at max_bytes (but always counting a first frame, however
 * large) or max_frames; -1 when the shared bytes are inconsistent (a corrupt or hostile peer).
 * *frames gets the count, *ring_bytes the ring bytes they occupy (padding included). */
static int64_t walk(eb_ring *R, uint64_t max_bytes, uint32_t max_frames, uint32_t *frames,
                    uint64_t *ring_bytes) {
    uint32_t cap = cap_of(R);
    uint32_t max_frame = R->max_frame;
    uint64_t tail = __atomic_load_n(U64AT(R->hdr, EB_OFF_TAIL), __ATOMIC_RELAXED);
    uint64_t head = __atomic_load_n(U64AT(R->hdr, EB_OFF_HEAD), __ATOMIC_ACQUIRE);
    uint64_t avail = head - tail;
    *frames = 0;
    *ring_bytes = 0;
    if (avail > cap || (avail & (EB_ALIGN - 1))) return -1;
    char *d = data_of(R);
    uint64_t used = 0, out = 0;
    uint32_t count = 0;
    while (used < avail && count < max_frames) {
        uint64_t pos = (tail + used) & (cap - 1);
        uint64_t to_end = cap - pos;
        uint32_t len = __atomic_load_n(U32AT(d, pos), __ATOMIC_RELAXED);
        if (len == EB_PAD_MARKER) {
            if (to_end > avail - used) return -1;
            used += to_end;
            continue;
        }
        uint64_t n = (uint64_t)len + 4;
        uint64_t need = align8(n);
        if (n > max_frame || need > to_end || need > avail - used) return -1;
        if (count > 0 && out + n > max_bytes) break;
        used += need;
        out += n;
        count++;
    }
    /* Trailing padding with no frame after it is consumed with the frames before it. */
    *frames = count;
    *ring_bytes = used;
    return (int64_t)out;
}

/* Bytes the next eb_read with the same limits would copy out (0 = empty, -1 = corrupt). */
int64_t eb_available(eb_ring *R, uint64_t max_bytes, uint32_t max_frames) {
    uint32_t frames;
    uint64_t ring_bytes;
    return walk(R, max_bytes, max_frames, &frames, &ring_bytes);
}

/* Copy whole frames out (each as u32 length + body, exactly the socket byte stream), then
 * release the space. Returns the bytes copied; 0 empty; -1 corrupt; -2 out too small for the
 * first frame. Signals wake_fd when the writer had announced it was waiting for space. */
int64_t eb_read(eb_ring *R, char *out, uint64_t outcap, uint32_t max_frames, int wake_fd) {
    uint32_t frames;
    uint64_t ring_bytes;
    int64_t total = walk(R, outcap, max_frames, &frames, &ring_bytes);
    if (total <= 0) {
        if (total == 0 && ring_bytes) goto release; /* only padding */
        return total;
    }
    if ((uint64_t)total > outcap) return -2;
    {
        uint32_t cap = cap_of(R);
        char *d = data_of(R);
        uint64_t tail = __atomic_load_n(U64AT(R->hdr, EB_OFF_TAIL), __ATOMIC_RELAXED);
        uint64_t used = 0, o = 0;
        for (uint32_t i = 0; i < frames;) {
            uint64_t pos = (tail + used) & (cap - 1);
            uint32_t len = __atomic_load_n(U32AT(d, pos), __ATOMIC_RELAXED);
            if (used >= ring_bytes) return -1;
            if (len == EB_PAD_MARKER) {
                used += cap - pos;
                continue;
            }
            /* Re-validate: a hostile writer may have changed the length since walk(). The copy
             * uses the length walk() accepted only if it is unchanged; else the ring is corrupt. */
            uint64_t n = (uint64_t)len + 4;
            if (o + n > (uint64_t)total || align8(n) > cap - pos) return -1;
            memcpy(out + o, &len, 4);
            memcpy(out + o + 4, d + pos + 4, len);
            o += n;
            used += align8(n);
            i++;
        }
        if (o != (uint64_t)total) return -1;
    }
release:
    {
        uint64_t tail = __atomic_load_n(U64AT(R->hdr, EB_OFF_TAIL), __ATOMIC_RELAXED);
        __atomic_store_n(U64AT(R->hdr, EB_OFF_TAIL), tail + ring_bytes, __ATOMIC_RELEASE);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (__atomic_load_n(U32AT(R->hdr, EB_OFF_WRITER_WAITING), __ATOMIC_RELAXED) &&
            __atomic_exchange_n(U32AT(R->hdr, EB_OFF_WRITER_WAITING), 0, __ATOMIC_SEQ_CST))
            signal_fd(wake_fd);
    }
    return total;
}

/* 1 when at least one entry (frame or padding) is published and unread. */
int eb_readable(eb_ring *R) {
    uint64_t tail = __atomic_load_n(U64AT(R->hdr, EB_OFF_TAIL), __ATOMIC_RELAXED);
    return __atomic_load_n(U64AT(R->hdr, EB_OFF_HEAD), __ATOMIC_ACQUIRE) != tail;
}

/* Before a reader sleeps: announce it, fence, re-check. 1 = data is there (do not sleep; the
 * flag is withdrawn), 0 = sleep on the data eventfd. */
int eb_prepare_sleep_data(eb_ring *R) {
    __atomic_store_n(U32AT(R->hdr, EB_OFF_READER_WAITING), 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (eb_readable(R)) {
        __atomic_store_n(U32AT(R->hdr, EB_OFF_READER_WAITING), 0, __ATOMIC_RELAXED);
        return 1;
    }
    return 0;
}

/* The reader is awake again: it polls instead of being signalled. */
void eb_cancel_sleep_data(eb_ring *R) {
    __atomic_store_n(U32AT(R->hdr, EB_OFF_READER_WAITING), 0, __ATOMIC_RELAXED);
}

/* Spin (politely) until the ring is readable or spin_ns passes. 1 = readable. */
int eb_wait_data(eb_ring *R, int64_t spin_ns) {
    if (eb_readable(R)) return 1;
    int64_t deadline = now_ns() + spin_ns;
    for (unsigned i = 1;; i++) {
        cpu_relax();
        if (eb_readable(R)) return 1;
        if ((i & 63) == 0) {
            if (now_ns() >= deadline) return 0;
            sched_yield();
        }
    }
}

/* Spin over several rings until one is readable (its index) or spin_ns passes (-1). */
int eb_wait_any(eb_ring **rings, int n, int64_t spin_ns) {
    int64_t deadline = now_ns() + spin_ns;
    for (unsigned i = 1;; i++) {
        for (int k = 0; k < n; k++)
            if (eb_readable(rings[k])) return k;
        cpu_relax();
        if ((i & 63) == 0) {
            if (now_ns() >= deadline) return -1;
            sched_yield();
        }
    }
}

/* --- mapping ---------------------------------------------------------------------------------- */

char *eb_map(int fd, size_t size) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : (char *)p;
}

int eb_unmap(char *p, size_t size) { return munmap(p, size); }
