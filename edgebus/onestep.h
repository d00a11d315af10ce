/* edgebus._onestep's private header: what its files share (edgebus/onestep.c says which file
 * holds what). The C sources are separate translation units (setup.py ONESTEP), so the small
 * helpers every part calls on its hot path are here as static inline functions, for the compiler
 * to inline them in each file as it did when they were one file; everything else that crosses
 * files is declared here with hidden visibility: bound inside the extension (no interposition,
 * no GOT/PLT indirection, nothing exported but PyInit__onestep). */
#ifndef EDGEBUS_ONESTEP_H
#define EDGEBUS_ONESTEP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <time.h>
#include <errno.h>
#include <sys/socket.h>

#pragma GCC visibility push(hidden)

typedef int (*ring_produce_fn)(void *R, void *S, const char *prefix, uint32_t plen,
                               const char *key, int32_t klen, const char *val, int32_t vlen,
                               int64_t ts, uint32_t corr, uint16_t api, int wake_fd, int hold);
typedef int64_t (*sock_produce_fn)(int fd, char *buf, uint64_t cap, const char *prefix,
                                   uint32_t plen, const char *key, int32_t klen, const char *val,
                                   int32_t vlen, int64_t ts, uint32_t corr, uint16_t api,
                                   int check_unread);

#define KIND_RING 0
#define KIND_SOCK 1
#define SEND_DECLINED -3 /* edgebus/sock_send.c EB_SEND_DECLINED */
#define FRAME_FIXED (12 + 4 + 64 + 22) /* edgebus/client/record_frames.py FRAME_FIXED */

/* zlib.crc32: a key's partition (client/types.py partition_for_key); NULL: keyed sends go to
 * the Python path. */
extern PyObject *zlib_crc32;

/* Attribute names, interned once. */
extern PyObject *s_fast, *s_value_ser, *s_key_ser, *s_txn, *s_channel, *s_closed, *s_ready,
    *s_in_flight, *s_queued, *s_wake_at, *s_lost, *s_fds_closed, *s_timed, *s_send_gap,
    *s_last_send, *s_sent_n, *s_read_mark, *s_size, *s_first_ts, *s_deadline, *s_reap,
    *s_buffer_memory, *s_max_in_flight;

typedef struct {
    PyObject_HEAD
    PyObject *producer;
    PyObject *py_send;       /* Producer.send, the function: the Python path */
    PyObject *one_class;     /* producer._one_class(topic, p) -> (class, PRODUCE prefix) */
    PyObject *handles;       /* c_send.channel_handles(ch) -> (kind, a, b, c, lock, corr, pending) or None */
    PyObject *send_rest;     /* c_send.send_rest(producer, ch, b, sent, n, corr): a socket's tail */
    PyObject *future_type;   /* FutureRecordMetadata */
    Py_ssize_t off_batch, off_index, off_ts; /* its slots */
    PyObject *partitions, *sticky, *record_max, *open, *sent; /* the producer's, never replaced */
    PyObject *pdict;         /* the producer's __dict__: its plain attributes, read and set there */
    PyObject *mutex_acquire, *mutex_release, *io_locked, *io_acquire, *io_release;
    PyObject *notify_all;    /* producer._cond.notify_all */
    PyObject *send_held;     /* producer._send_held: the general path of a record declined here */
    PyObject *args_false;    /* (False,): acquire without waiting */
    long reap_at, max_record, header, record_fixed, api;
    long long corr_mask;
    double first_deadline, unread_recent, steady;
    void *ring_produce, *sock_produce;
    /* The channel last sent on and what of it the C path uses. */
    PyObject *ch, *ch_dict, *ch_locked, *ch_acquire, *ch_release, *ch_corr, *ch_pending;
    int ch_kind;
    uintptr_t ch_a, ch_b;
    long long ch_c;
    /* The partition last sent to: its _OneSend class and PRODUCE body prefix. */
    PyObject *last_topic, *last_cls, *last_pre;
    long last_p;
    /* Counts, for tests and benchmarks: sends made here, handed to the Python path. */
    unsigned long long n_c, n_py;
    vectorcallfunc vectorcall;
} Sender;

static inline double mono_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* time.monotonic's clock on Linux */
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static inline int64_t wall_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t); /* time.time_ns's clock */
    return ((int64_t)t.tv_sec * 1000000000 + t.tv_nsec) / 1000000;
}

/* Tests only (tests/client/test_send_cext.py): _onestep._fail_allocation(k) makes the k-th
 * allocation checked here from then on fail with MemoryError, once (NOMEM marks the checks: the
 * allocations of a send and of the acknowledgements' intake). -1: none; a compare when off. */
extern long fault_at, fault_hits;

static inline int nomem(void) {
    if (fault_at < 0 || fault_at-- != 0) return 0;
    fault_hits++;
    PyErr_NoMemory();
    return 1;
}
#define NOMEM(expr) (nomem() ? NULL : (expr))
#define NOMEM_INT(expr) (nomem() ? -1 : (expr))

static inline PyObject *bound(PyObject *o, const char *name) { return PyObject_GetAttrString(o, name); }

/* An attribute of o: from d, o's __dict__, when given and it is there (c_send.install checks
 * that no such name is a data descriptor of o's class, so the dict is where Python looks first;
 * the dict was made before, so reading it allocates nothing), else by PyObject_GetAttr. */
static inline PyObject *get_attr(PyObject *d, PyObject *o, PyObject *name) {
    if (d != NULL) {
        PyObject *v = PyDict_GetItemWithError(d, name);
        if (v != NULL) return Py_NewRef(v);
        if (PyErr_Occurred()) return NULL;
    }
    return PyObject_GetAttr(o, name);
}

static inline int put_attr(PyObject *d, PyObject *o, PyObject *name, PyObject *v) {
    return d != NULL ? PyDict_SetItem(d, name, v) : PyObject_SetAttr(o, name, v);
}

/* An attribute's truth / long / double; -1 (and an exception) on error. */
static inline int attr_true(PyObject *d, PyObject *o, PyObject *name) {
    PyObject *v = get_attr(d, o, name);
    if (v == NULL) return -1;
    int r = v == Py_True ? 1 : v == Py_False || v == Py_None ? 0 : PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

static inline int attr_long(PyObject *d, PyObject *o, PyObject *name, long long *out) {
    PyObject *v = get_attr(d, o, name);
    if (v == NULL) return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* A limit the C path can compare: 1 an int that fits (in *out), 0 anything else (a float, a
 * huge int: the Python path's), -1 an error. */
static inline int attr_limit(PyObject *d, PyObject *o, PyObject *name, long long *out) {
    PyObject *v = get_attr(d, o, name);
    if (v == NULL) return -1;
    int ok = PyLong_CheckExact(v);
    if (ok) {
        int overflow = 0;
        *out = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (*out == -1 && PyErr_Occurred()) ok = -1;
        else if (overflow) ok = 0;
    }
    Py_DECREF(v);
    return ok;
}

static inline int attr_double(PyObject *d, PyObject *o, PyObject *name, double *out) {
    PyObject *v = get_attr(d, o, name);
    if (v == NULL) return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static inline int set_long(PyObject *d, PyObject *o, PyObject *name, long long v) {
    PyObject *x = PyLong_FromLongLong(v);
    if (x == NULL) return -1;
    int r = put_attr(d, o, name, x);
    Py_DECREF(x);
    return r;
}

static inline int set_double(PyObject *d, PyObject *o, PyObject *name, double v) {
    PyObject *x = PyFloat_FromDouble(v);
    if (x == NULL) return -1;
    int r = put_attr(d, o, name, x);
    Py_DECREF(x);
    return r;
}

/* 1: the lock `locked_fn` belongs to is held, 0: free, -1: error. */
static inline int is_locked(PyObject *locked_fn) {
    PyObject *r = PyObject_CallNoArgs(locked_fn);
    if (r == NULL) return -1;
    int held = r == Py_True;
    Py_DECREF(r);
    return held;
}

static inline int try_acquire(Sender *s, PyObject *acquire_fn) {
    PyObject *r = PyObject_Call(acquire_fn, s->args_false, NULL);
    if (r == NULL) return -1;
    int got = r == Py_True;
    Py_DECREF(r);
    return got;
}

static inline int release(PyObject *release_fn) {
    PyObject *r = PyObject_CallNoArgs(release_fn);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* ---- The acknowledgements' intake (onestep_acks.c, onestep_settle.c, onestep_reap.c) ---- */

#define RESP_HEAD 10  /* length u32, correlation id u32, error i16 (docs/FORMAT.md 7.2) */
#define FRAME_LEN 4
#define RUN_SIZE 28   /* PRODUCE answer's run: partition i32, base offset, append time, log start */
#define STR_SIZE 2
#define SMALL_FRAME (64 * 1024)

#define ACKED_MAX 256 /* settled in groups of at most this many */

typedef struct {
    PyObject *b;   /* a strong reference */
    PyObject *key; /* its correlation id, as pending's key (a strong reference) */
    int64_t base, ts;
} acked_t;

extern PyObject *g_py_deliver, *g_one_send_type, *g_run_callbacks;

extern PyObject *s_pending, *s_lock, *s_owner, *s_done, *s_base, *s_timestamp, *s_event,
    *s_callbacks, *s_mutex, *s_results_lock, *s_sent_d, *s_counts, *s_drain_held, *s_blocked,
    *s_flushing, *s_open, *s_cond, *s_one_step_acked, *s_rec_total,
    *s_batch_total, *s_notify_all, *s_acquire, *s_release, *s_locked, *s_empty, *s_dict;

extern long g_header;

extern PyObject *s_lazy_wait, *s_reaped_at, *s_reap_lock, *s_deferred, *s_closed_ch, *s_proto,
    *s_frames, *s_fbuf, *s_fpos, *s_sock, *s_fileno, *s_take_data, *s_reaped, *s_nudge;

static inline uint32_t u32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline int64_t i64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return (int64_t)v;
}

static inline PyObject *call_method0(PyObject *o, PyObject *name) {
    return PyObject_CallMethodNoArgs(o, name);
}

/* lock.acquire() (waiting) or lock.acquire(False); 1 got, 0 not, -1 error. */
static inline int lock_acquire(PyObject *lock, int wait) {
    PyObject *r = wait ? PyObject_CallMethodNoArgs(lock, s_acquire)
                       : PyObject_CallMethodOneArg(lock, s_acquire, Py_False);
    if (r == NULL) return -1;
    int got = r == Py_True;
    Py_DECREF(r);
    return got;
}

/* lock.locked(): 1 held, 0 free, -1 error. */
static inline int is_locked_obj(PyObject *lock) {
    PyObject *r = PyObject_CallMethodNoArgs(lock, s_locked);
    if (r == NULL) return -1;
    int held = r == Py_True;
    Py_DECREF(r);
    return held;
}

static inline int lock_release(PyObject *lock) {
    PyObject *r = PyObject_CallMethodNoArgs(lock, s_release);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* ---- Defined in one file, used in another ---- */

/* onestep_sender.c */
extern PyTypeObject SenderType;

/* onestep_send.c */
PyObject *onestep_Sender_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                    PyObject *kwnames);

/* onestep_settle.c */
void onestep_restore(PyObject *pending, acked_t *acked, Py_ssize_t n);
void onestep_release_acked(acked_t *acked, Py_ssize_t n);
int onestep_settle(PyObject *pending, acked_t *acked, Py_ssize_t n);

/* onestep_acks.c */
PyObject *onestep_configure(PyObject *m, PyObject *args);
int onestep_walk(PyObject *pending, const unsigned char *buf, Py_ssize_t end, int whole,
                 acked_t *acked, Py_ssize_t *nacked, Py_ssize_t *pos_p, Py_ssize_t *taken);
PyObject *onestep_deliver(PyObject *m, PyObject *const *args, Py_ssize_t nargs);

/* onestep_reap.c */
PyObject *onestep_sock_reap(PyObject *m, PyObject *const *args, size_t nargsf,
                            PyObject *kwnames);

#pragma GCC visibility pop

#endif /* EDGEBUS_ONESTEP_H */
