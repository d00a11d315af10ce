/* edgebus._onestep: a producer's one-record send() as one C call (issue 16).
 *
 * A `Sender` is made once per Producer (edgebus/client/c_send.py) and set as the instance's
 * `send`. A call does what Producer.send -> _send_one -> channel.send_record do for a plain
 * one-step send (edgebus/client/fast_send.py) without running their bytecode: the argument
 * checks, the partition, the batch-and-result object (`_OneSend`) and its future, the producer's
 * in-flight bookkeeping, the channel's correlation id and pending entry, and the frame built and
 * written by the C function the channel already uses (edgebus/shm/produce.c eb_ring_produce, or
 * edgebus/sock_send.c eb_sock_produce, called through their addresses). Anything else returns
 * the call to Producer.send (the Python path) before anything was changed: it then decides
 * everything again, as if the C object did not exist.
 *
 * Invariants (docs/INVARIANTS.md 16b):
 * - Exclusion. What the Python path does under the producer's mutex (an RLock), its I/O lock
 *   and the channel's lock, this does while holding the GIL without running any Python code or
 *   allocating any object the garbage collector tracks (a collection could run a finaliser,
 *   which could switch threads): every such object is made before, and the locks are looked at
 *   (the RLock acquired without waiting, the two plain locks' locked()) at the start of that
 *   stretch. So no other thread can be inside one of those locks' sections while it runs; one
 *   that is makes this hand the call to the Python path, which waits for the lock.
 * - Nothing half done. Until the frame is written nothing is changed; a write the C function
 *   declined (the hold, no room in the ring) or could not make hands the call over untouched.
 *   The one case with Python code after the write (a socket send(2) that took part of the frame,
 *   or failed) runs with the I/O and channel locks really held, as the Python path's sendall.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <time.h>
#include <errno.h>
#include <sys/socket.h>

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
static PyObject *zlib_crc32;

/* Attribute names, interned once. */
static PyObject *s_fast, *s_value_ser, *s_key_ser, *s_txn, *s_channel, *s_closed, *s_ready,
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

static double mono_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t); /* time.monotonic's clock on Linux */
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int64_t wall_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t); /* time.time_ns's clock */
    return ((int64_t)t.tv_sec * 1000000000 + t.tv_nsec) / 1000000;
}

/* Tests only (tests/client/test_send_cext.py): _onestep._fail_allocation(k) makes the k-th
 * allocation checked here from then on fail with MemoryError, once (NOMEM marks the checks: the
 * allocations of a send and of the acknowledgements' intake). -1: none; a compare when off. */
static long fault_at = -1, fault_hits;

static int nomem(void) {
    if (fault_at < 0 || fault_at-- != 0) return 0;
    fault_hits++;
    PyErr_NoMemory();
    return 1;
}
#define NOMEM(expr) (nomem() ? NULL : (expr))
#define NOMEM_INT(expr) (nomem() ? -1 : (expr))

static void drop_channel(Sender *s) {
    Py_CLEAR(s->ch);
    Py_CLEAR(s->ch_dict);
    Py_CLEAR(s->ch_locked);
    Py_CLEAR(s->ch_acquire);
    Py_CLEAR(s->ch_release);
    Py_CLEAR(s->ch_corr);
    Py_CLEAR(s->ch_pending);
}

static int Sender_traverse(Sender *s, visitproc visit, void *arg) {
    Py_VISIT(s->producer);
    Py_VISIT(s->py_send);
    Py_VISIT(s->one_class);
    Py_VISIT(s->handles);
    Py_VISIT(s->send_rest);
    Py_VISIT(s->future_type);
    Py_VISIT(s->partitions);
    Py_VISIT(s->sticky);
    Py_VISIT(s->record_max);
    Py_VISIT(s->open);
    Py_VISIT(s->sent);
    Py_VISIT(s->mutex_acquire);
    Py_VISIT(s->mutex_release);
    Py_VISIT(s->io_locked);
    Py_VISIT(s->io_acquire);
    Py_VISIT(s->io_release);
    Py_VISIT(s->notify_all);
    Py_VISIT(s->send_held);
    Py_VISIT(s->ch);
    Py_VISIT(s->ch_dict);
    Py_VISIT(s->pdict);
    Py_VISIT(s->ch_locked);
    Py_VISIT(s->ch_acquire);
    Py_VISIT(s->ch_release);
    Py_VISIT(s->ch_corr);
    Py_VISIT(s->ch_pending);
    Py_VISIT(s->last_cls);
    return 0;
}

static int Sender_clear(Sender *s) {
    Py_CLEAR(s->producer);
    Py_CLEAR(s->py_send);
    Py_CLEAR(s->one_class);
    Py_CLEAR(s->handles);
    Py_CLEAR(s->send_rest);
    Py_CLEAR(s->future_type);
    Py_CLEAR(s->partitions);
    Py_CLEAR(s->sticky);
    Py_CLEAR(s->record_max);
    Py_CLEAR(s->open);
    Py_CLEAR(s->sent);
    Py_CLEAR(s->pdict);
    Py_CLEAR(s->mutex_acquire);
    Py_CLEAR(s->mutex_release);
    Py_CLEAR(s->io_locked);
    Py_CLEAR(s->io_acquire);
    Py_CLEAR(s->io_release);
    Py_CLEAR(s->notify_all);
    Py_CLEAR(s->send_held);
    Py_CLEAR(s->args_false);
    drop_channel(s);
    Py_CLEAR(s->last_topic);
    Py_CLEAR(s->last_cls);
    Py_CLEAR(s->last_pre);
    return 0;
}

static void Sender_dealloc(Sender *s) {
    PyObject_GC_UnTrack(s);
    Sender_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static Py_ssize_t slot_offset(PyObject *type, const char *name) {
    PyObject *d = PyObject_GetAttrString(type, name);
    if (d == NULL) return -1;
    Py_ssize_t off = -1;
    if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX) off = m->offset;
    }
    Py_DECREF(d);
    if (off < 0) PyErr_Format(PyExc_TypeError, "%s is not an object slot", name);
    return off;
}

static PyObject *bound(PyObject *o, const char *name) { return PyObject_GetAttrString(o, name); }

static PyObject *bound_of(PyObject *o, const char *attr, const char *name) {
    PyObject *x = PyObject_GetAttrString(o, attr);
    if (x == NULL) return NULL;
    PyObject *m = PyObject_GetAttrString(x, name);
    Py_DECREF(x);
    return m;
}

/* Sender(producer, py_send, one_class, handles, send_rest, future_type, mutex, io_lock,
 *        ring_produce_addr, sock_produce_addr, limits) with limits a tuple (reap_at,
 *        max_record, header, record_fixed, first_deadline,
 *        unread_recent, steady, api, corr_mask): edgebus/client/c_send.py. */
static int Sender_init(Sender *s, PyObject *args, PyObject *kw) {
    PyObject *producer, *py_send, *one_class, *handles, *send_rest, *future_type, *mutex, *io;
    unsigned long long ring_addr, sock_addr;
    long reap_at, max_record, header, record_fixed, api;
    long long corr_mask;
    double first_deadline, unread_recent, steady;
    if (!PyArg_ParseTuple(args, "OOOOOOOOKK(lllldddlL)", &producer, &py_send, &one_class,
                          &handles, &send_rest, &future_type, &mutex, &io, &ring_addr,
                          &sock_addr, &reap_at, &max_record, &header,
                          &record_fixed, &first_deadline, &unread_recent,
                          &steady, &api, &corr_mask))
        return -1;
    if (!PyType_Check(future_type)) {
        PyErr_SetString(PyExc_TypeError, "future_type must be a type");
        return -1;
    }
    Sender_clear(s);
    s->off_batch = slot_offset(future_type, "_batch");
    s->off_index = slot_offset(future_type, "_index");
    s->off_ts = slot_offset(future_type, "_timestamp");
    if (s->off_batch < 0 || s->off_index < 0 || s->off_ts < 0) return -1;
    s->producer = Py_NewRef(producer);
    s->py_send = Py_NewRef(py_send);
    s->one_class = Py_NewRef(one_class);
    s->handles = Py_NewRef(handles);
    s->send_rest = Py_NewRef(send_rest);
    s->future_type = Py_NewRef(future_type);
    if (!(s->partitions = PyObject_GetAttrString(producer, "_partitions")) ||
        !(s->sticky = PyObject_GetAttrString(producer, "_sticky")) ||
        !(s->record_max = PyObject_GetAttrString(producer, "_record_max")) ||
        !(s->open = PyObject_GetAttrString(producer, "_open")) ||
        !(s->sent = PyObject_GetAttrString(producer, "_sent")) ||
        !(s->pdict = PyObject_GetAttrString(producer, "__dict__")) ||
        !(s->mutex_acquire = bound(mutex, "acquire")) ||
        !(s->mutex_release = bound(mutex, "release")) || !(s->io_locked = bound(io, "locked")) ||
        !(s->io_acquire = bound(io, "acquire")) || !(s->io_release = bound(io, "release")) ||
        !(s->notify_all = bound_of(producer, "_cond", "notify_all")) ||
        !(s->send_held = PyObject_GetAttrString(producer, "_send_held")) ||
        !(s->args_false = Py_BuildValue("(O)", Py_False)))
        return -1;
    if (!PyDict_CheckExact(s->partitions) || !PyDict_CheckExact(s->sticky) ||
        !PyDict_CheckExact(s->record_max) || !PyDict_CheckExact(s->open) ||
        !PyDict_CheckExact(s->sent) || !PyDict_CheckExact(s->pdict)) {
        PyErr_SetString(PyExc_TypeError, "the producer's tables must be dicts");
        return -1;
    }
    s->reap_at = reap_at;
    s->max_record = max_record;
    s->header = header;
    s->record_fixed = record_fixed;
    s->first_deadline = first_deadline;
    s->unread_recent = unread_recent;
    s->steady = steady;
    s->api = api;
    s->corr_mask = corr_mask;
    s->ring_produce = (void *)(uintptr_t)ring_addr;
    s->sock_produce = (void *)(uintptr_t)sock_addr;
    return 0;
}

/* Look at channel ch (the producer's) and cache what the C path needs of it; 0 usable, 1 not
 * (the Python path sends on it), -1 an error. */
static int use_channel(Sender *s, PyObject *ch) {
    if (ch == s->ch) return s->ch_kind < 0;
    /* All looked up into locals first, then the cache swapped with no Python code between and
     * the old references dropped last: handles() is Python code and a DECREF may run a
     * finalizer, and another thread may set the cache meanwhile (its references would leak). */
    PyObject *h = PyObject_CallOneArg(s->handles, ch);
    if (h == NULL) return -1;
    PyObject *lock = NULL, *corr = NULL, *pending = NULL, *d = NULL, *lk = NULL, *aq = NULL,
             *rl = NULL;
    unsigned long long a = 0, b = 0;
    long long c = 0;
    int kind = -1;
    if (h != Py_None) {
        if (!PyArg_ParseTuple(h, "iKKLOOO", &kind, &a, &b, &c, &lock, &corr, &pending) ||
            !PyDict_CheckExact(pending)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "pending must be a dict");
            Py_DECREF(h);
            return -1;
        }
        d = PyObject_GetAttrString(ch, "__dict__");
        if (d == NULL || !PyDict_CheckExact(d)) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "a channel's __dict__ must be a dict");
            Py_XDECREF(d);
            Py_DECREF(h);
            return -1;
        }
        if (!(lk = bound(lock, "locked")) || !(aq = bound(lock, "acquire")) ||
            !(rl = bound(lock, "release"))) {
            Py_XDECREF(lk);
            Py_XDECREF(aq);
            Py_DECREF(d);
            Py_DECREF(h);
            return -1;
        }
        if ((kind == KIND_RING && s->ring_produce == NULL) ||
            (kind == KIND_SOCK && s->sock_produce == NULL))
            kind = -1;
    }
    PyObject *old[7] = {s->ch, s->ch_dict, s->ch_locked, s->ch_acquire, s->ch_release,
                        s->ch_corr, s->ch_pending};
    s->ch = Py_NewRef(ch);
    s->ch_dict = d;
    s->ch_locked = lk;
    s->ch_acquire = aq;
    s->ch_release = rl;
    s->ch_corr = Py_XNewRef(corr);
    s->ch_pending = Py_XNewRef(pending);
    s->ch_kind = kind;
    s->ch_a = (uintptr_t)a;
    s->ch_b = (uintptr_t)b;
    s->ch_c = c;
    Py_DECREF(h);
    for (int i = 0; i < 7; i++) Py_XDECREF(old[i]);
    return kind < 0;
}

/* An attribute of o: from d, o's __dict__, when given and it is there (c_send.install checks
 * that no such name is a data descriptor of o's class, so the dict is where Python looks first;
 * the dict was made before, so reading it allocates nothing), else by PyObject_GetAttr. */
static PyObject *get_attr(PyObject *d, PyObject *o, PyObject *name) {
    if (d != NULL) {
        PyObject *v = PyDict_GetItemWithError(d, name);
        if (v != NULL) return Py_NewRef(v);
        if (PyErr_Occurred()) return NULL;
    }
    return PyObject_GetAttr(o, name);
}

static int put_attr(PyObject *d, PyObject *o, PyObject *name, PyObject *v) {
    return d != NULL ? PyDict_SetItem(d, name, v) : PyObject_SetAttr(o, name, v);
}

/* An attribute's truth / long / double; -1 (and an exception) on error. */
static int attr_true(PyObject *d, PyObject *o, PyObject *name) {
    PyObject *v = get_attr(d, o, name);
    if (v == NULL) return -1;
    int r = v == Py_True ? 1 : v == Py_False || v == Py_None ? 0 : PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

static int attr_long(PyObject *d, PyObject *o, PyObject *name, long long *out) {
    PyObject *v = get_attr(d, o, name);
    if (v == NULL) return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* A limit the C path can compare: 1 an int that fits (in *out), 0 anything else (a float, a
 * huge int: the Python path's), -1 an error. */
static int attr_limit(PyObject *d, PyObject *o, PyObject *name, long long *out) {
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

static int attr_double(PyObject *d, PyObject *o, PyObject *name, double *out) {
    PyObject *v = get_attr(d, o, name);
    if (v == NULL) return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int set_long(PyObject *d, PyObject *o, PyObject *name, long long v) {
    PyObject *x = PyLong_FromLongLong(v);
    if (x == NULL) return -1;
    int r = put_attr(d, o, name, x);
    Py_DECREF(x);
    return r;
}

static int set_double(PyObject *d, PyObject *o, PyObject *name, double v) {
    PyObject *x = PyFloat_FromDouble(v);
    if (x == NULL) return -1;
    int r = put_attr(d, o, name, x);
    Py_DECREF(x);
    return r;
}

/* 1: the lock `locked_fn` belongs to is held, 0: free, -1: error. */
static int is_locked(PyObject *locked_fn) {
    PyObject *r = PyObject_CallNoArgs(locked_fn);
    if (r == NULL) return -1;
    int held = r == Py_True;
    Py_DECREF(r);
    return held;
}

static int try_acquire(Sender *s, PyObject *acquire_fn) {
    PyObject *r = PyObject_Call(acquire_fn, s->args_false, NULL);
    if (r == NULL) return -1;
    int got = r == Py_True;
    Py_DECREF(r);
    return got;
}

static int release(PyObject *release_fn) {
    PyObject *r = PyObject_CallNoArgs(release_fn);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *onestep_sock_reap(PyObject *m, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames);

/* The Python path: Producer.send(producer, *args, **kwargs) as called. */
static PyObject *python_path(Sender *s, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *small[8];
    PyObject **all = nargs + nkw + 1 <= 8 ? small : PyMem_Malloc((nargs + nkw + 1) * sizeof(PyObject *));
    if (all == NULL) return PyErr_NoMemory();
    all[0] = s->producer;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) all[i + 1] = args[i];
    s->n_py++;
    PyObject *r = PyObject_Vectorcall(s->py_send, all, (size_t)(nargs + 1), kwnames);
    if (all != small) PyMem_Free(all);
    return r;
}

static const char *const ARG_NAMES[] = {"topic", "value", "key", "headers", "partition",
                                        "timestamp_ms"};

/* send(topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None) */
static PyObject *Sender_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    Sender *s = (Sender *)self;
    PyObject *a[6] = {NULL, Py_None, Py_None, Py_None, Py_None, Py_None};
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (s->producer == NULL) {
        PyErr_SetString(PyExc_TypeError, "an edgebus Sender not made by c_send.install");
        return NULL;
    }
    if (nargs > 6) return python_path(s, args, nargsf, kwnames);
    for (Py_ssize_t i = 0; i < nargs; i++) a[i] = args[i];
    if (kwnames != NULL) {
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(kwnames); j++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, j);
            int at = -1;
            for (int i = 0; i < 6; i++)
                if (PyUnicode_CompareWithASCIIString(name, ARG_NAMES[i]) == 0) at = i;
            if (at < nargs) return python_path(s, args, nargsf, kwnames); /* its error */
            a[at] = args[nargs + j];
        }
    }
    PyObject *topic = a[0], *value = a[1], *key = a[2], *headers = a[3], *partition = a[4],
             *tsarg = a[5];
    /* Producer.send's checks: anything but plain bytes, no headers, a known partition and a
     * timestamp that is None or an int goes to the Python path. */
    if (topic == NULL || !PyUnicode_CheckExact(topic) ||
        (value != Py_None && !PyBytes_CheckExact(value)) ||
        (key != Py_None && !PyBytes_CheckExact(key)) ||
        (tsarg != Py_None && !PyLong_CheckExact(tsarg)) ||
        (partition != Py_None && !PyLong_CheckExact(partition)))
        return python_path(s, args, nargsf, kwnames);
    if (headers != Py_None &&
        !((PyList_CheckExact(headers) || PyTuple_CheckExact(headers)) && Py_SIZE(headers) == 0))
        return python_path(s, args, nargsf, kwnames);
    PyObject *producer = s->producer;
    int r;
    if ((r = attr_true(s->pdict, producer, s_fast)) != 1) return r < 0 ? NULL : python_path(s, args, nargsf, kwnames);
    if (value != Py_None && (r = attr_true(s->pdict, producer, s_value_ser)) != 0)
        return r < 0 ? NULL : python_path(s, args, nargsf, kwnames);
    if (key != Py_None && (r = attr_true(s->pdict, producer, s_key_ser)) != 0)
        return r < 0 ? NULL : python_path(s, args, nargsf, kwnames);
    PyObject *nobj = PyDict_GetItemWithError(s->partitions, topic);
    if (nobj == NULL) return PyErr_Occurred() ? NULL : python_path(s, args, nargsf, kwnames);
    if ((r = attr_true(s->pdict, producer, s_txn)) != 0) return r < 0 ? NULL : python_path(s, args, nargsf, kwnames);
    long n = PyLong_AsLong(nobj), p;
    if (partition != Py_None) {
        p = PyLong_AsLong(partition);
        if (p == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return python_path(s, args, nargsf, kwnames);
        }
        if (p < 0 || p >= n) return python_path(s, args, nargsf, kwnames); /* its error */
    } else if (key != Py_None) {
        /* partition_for_key: zlib.crc32(key) % n (a C function: runs no Python code) */
        if (zlib_crc32 == NULL || n <= 0) return python_path(s, args, nargsf, kwnames);
        PyObject *h = PyObject_CallOneArg(zlib_crc32, key);
        if (h == NULL) return NULL;
        unsigned long hv = PyLong_AsUnsignedLong(h);
        Py_DECREF(h);
        if (hv == (unsigned long)-1 && PyErr_Occurred()) return NULL;
        p = (long)(hv % (unsigned long)n);
    } else {
        PyObject *st = PyDict_GetItemWithError(s->sticky, topic);
        if (st == NULL || !PyLong_CheckExact(st))
            return PyErr_Occurred() ? NULL : python_path(s, args, nargsf, kwnames);
        p = PyLong_AsLong(st);
    }
    int64_t ts;
    if (tsarg == Py_None) {
        ts = wall_ms();
    } else {
        int overflow;
        ts = PyLong_AsLongLongAndOverflow(tsarg, &overflow);
        if (overflow || (ts == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return python_path(s, args, nargsf, kwnames);
        }
    }
    /* _send_one's checks that need no lock */
    Py_ssize_t kl = key == Py_None ? 0 : PyBytes_GET_SIZE(key);
    Py_ssize_t vl = value == Py_None ? 0 : PyBytes_GET_SIZE(value);
    long long size = s->record_fixed + kl + vl;
    PyObject *ch = get_attr(s->pdict, producer, s_channel);
    if (ch == NULL) return NULL;
    PyObject *res = NULL, *b = NULL, *f = NULL, *ts_obj = NULL, *id_obj = NULL;
    PyObject *cls = NULL, *pre = NULL, *ch_acq = NULL, *ch_rel = NULL;
    PyObject *corr_obj = NULL, *v_in_flight = NULL, *v_queued = NULL, *v_last = NULL,
             *v_gap = NULL, *v_sent_n = NULL, *v_mark = NULL;
    int got_mutex = 0;
    if (ch == Py_None || size > s->max_record) goto python;
    PyObject *rm = PyDict_GetItemWithError(s->record_max, topic);
    if (rm == NULL) {
        if (PyErr_Occurred()) goto error;
        goto python;
    }
    if (size + s->header > PyLong_AsLongLong(rm)) goto python;
    long long in_flight;
    if (attr_long(s->pdict, producer, s_in_flight, &in_flight) < 0) goto error;
    if (in_flight >= s->reap_at) {
        /* The acknowledgements, taken now (ch.reap: Python, maybe the user's callbacks); as
         * _send_one's, but before the locks are looked at: it takes what it needs itself. */
        PyObject *x = s->ch == ch && s->ch_kind == KIND_SOCK ? onestep_sock_reap(NULL, &ch, 1, NULL)
                                                             : PyObject_CallMethodNoArgs(ch, s_reap);
        if (x == NULL) goto error;
        Py_DECREF(x);
    }
    /* The partition's _OneSend class and PRODUCE prefix (fast_send._one_class). */
    if (s->last_topic == NULL || s->last_p != p ||
        (s->last_topic != topic && PyUnicode_Compare(s->last_topic, topic) != 0)) {
        if (PyErr_Occurred()) goto error;
        PyObject *got = PyObject_CallFunction(s->one_class, "Ol", topic, p);
        if (got == NULL) goto error;
        if (!PyTuple_CheckExact(got) || PyTuple_GET_SIZE(got) != 2 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(got, 1))) {
            Py_DECREF(got);
            PyErr_SetString(PyExc_TypeError, "_one_class must give (class, bytes)");
            goto error;
        }
        Py_XSETREF(s->last_cls, Py_NewRef(PyTuple_GET_ITEM(got, 0)));
        Py_XSETREF(s->last_pre, Py_NewRef(PyTuple_GET_ITEM(got, 1)));
        Py_XSETREF(s->last_topic, Py_NewRef(topic));
        s->last_p = p;
        Py_DECREF(got);
    }
    /* Ours from here: another thread's send may change the cache while Python code runs. */
    cls = Py_NewRef(s->last_cls);
    pre = Py_NewRef(s->last_pre);
    /* Every object the send needs, made before the locks are looked at (module comment). */
    double now = mono_now();
    double deadline = now + s->first_deadline;
    if (!(b = NOMEM(PyObject_CallNoArgs(cls)))) goto error;
    if (!(ts_obj = NOMEM(PyLong_FromLongLong(ts)))) goto error;
    if (NOMEM_INT(set_long(NULL, b, s_size, size + s->header)) < 0 ||
        NOMEM_INT(PyObject_SetAttr(b, s_first_ts, ts_obj)) < 0 ||
        set_double(NULL, b, s_deadline, deadline) < 0)
        goto error;
    PyTypeObject *ft = (PyTypeObject *)s->future_type;
    if (!(f = NOMEM(ft->tp_alloc(ft, 0)))) goto error;
    *(PyObject **)((char *)f + s->off_batch) = Py_NewRef(b);
    *(PyObject **)((char *)f + s->off_index) = PyLong_FromLong(0);
    *(PyObject **)((char *)f + s->off_ts) = Py_NewRef(ts_obj);
    if (!(id_obj = NOMEM(PyLong_FromVoidPtr(b)))) goto error;
    /* The channel's handles (made when it changed: Python code, which may let another thread
     * send and change them again; so the last look is after it, with none run since). */
    if ((r = use_channel(s, ch)) != 0) {
        if (r < 0) goto error;
        goto python;
    }
    if (s->ch != ch) goto python;
    int kind = s->ch_kind;
    ch_acq = Py_NewRef(s->ch_acquire); /* used after Python code ran (the socket's rest) */
    ch_rel = Py_NewRef(s->ch_release);

    /* --- the stretch that must not run Python code (module comment) --- */
    if ((r = is_locked(s->io_locked)) != 0 || (r = is_locked(s->ch_locked)) != 0) {
        if (r < 0) goto error;
        goto python; /* the I/O thread, or another writer, is sending: the Python path queues */
    }
    if ((r = try_acquire(s, s->mutex_acquire)) != 1) {
        if (r < 0) goto error;
        goto python;
    }
    got_mutex = 1;
    long long queued;
    double wake_at;
    if ((r = attr_true(s->pdict, producer, s_closed)) != 0 || PyDict_GET_SIZE(s->open) != 0) {
        if (r < 0) goto error;
        goto python;
    }
    PyObject *ready = get_attr(s->pdict, producer, s_ready);
    if (ready == NULL) goto error;
    Py_ssize_t nready = PyObject_Length(ready);
    Py_DECREF(ready);
    if (nready != 0) {
        if (nready < 0) goto error;
        goto python;
    }
    PyObject *now_ch = get_attr(s->pdict, producer, s_channel);
    if (now_ch == NULL) goto error;
    Py_DECREF(now_ch);
    if (now_ch != ch) goto python;
    PyObject *lost = get_attr(s->ch_dict, ch, s_lost);
    if (lost == NULL) goto error;
    Py_DECREF(lost);
    if (lost != Py_None) goto python; /* the Python path fails or reconnects */
    /* max_in_flight and buffer_memory as they are now: a user may change them after start */
    long long max_in_flight, buffer_memory;
    if (attr_long(s->pdict, producer, s_in_flight, &in_flight) < 0 ||
        attr_long(s->pdict, producer, s_queued, &queued) < 0 ||
        attr_double(s->pdict, producer, s_wake_at, &wake_at) < 0)
        goto error;
    /* A user's float or huge limit (64e6, inf): Producer.send compares it as it is. */
    if ((r = attr_limit(s->pdict, producer, s_max_in_flight, &max_in_flight)) <= 0 ||
        (r = attr_limit(s->pdict, producer, s_buffer_memory, &buffer_memory)) <= 0) {
        if (r < 0) goto error;
        goto python;
    }
    if (in_flight >= max_in_flight || queued + size > buffer_memory)
        goto python;
    /* The I/O thread must learn this batch's deadline: told after the write, still under the
     * mutex (Condition.notify_all is Python code: it may let other threads run, which the
     * write no longer needs to keep out). */
    int notify = deadline < wake_at;
    int hold = in_flight > 0;
    if (kind == KIND_RING && (r = attr_true(s->ch_dict, ch, s_fds_closed)) != 0) {
        if (r < 0) goto error;
        goto python;
    }
    int timed = attr_true(s->ch_dict, ch, s_timed);
    double last_send = 0.0;
    if (timed < 0 || attr_double(s->ch_dict, ch, s_last_send, &last_send) < 0) goto error;
    /* dispatch.next_corr: (next(count) - 1) % CORR_MASK + 1 */
    PyObject *c = PyIter_Next(s->ch_corr);
    if (c == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the correlation ids ended");
        goto error;
    }
    long long craw = PyLong_AsLongLong(c);
    Py_DECREF(c);
    if (craw == -1 && PyErr_Occurred()) goto error;
    uint32_t corr = (uint32_t)((craw - 1) % s->corr_mask + 1);
    if (!(corr_obj = NOMEM(PyLong_FromUnsignedLong(corr)))) goto error;
    /* Every object the commit below stores, made now: after the write nothing may fail (a
     * failed allocation there left a written record uncounted in flight, and its answer made
     * the count negative). pending and the producer's sent table take the record before the
     * write, and give it back (no allocation) if nothing is written. */
    long long nsent = 0;
    double gap_avg = 0.0;
    if ((kind == KIND_SOCK && attr_long(s->ch_dict, ch, s_sent_n, &nsent) < 0) ||
        (timed && attr_double(s->ch_dict, ch, s_send_gap, &gap_avg) < 0))
        goto error;
    double gap = now - last_send;
    if (gap > s->steady) gap = s->steady;
    if (!(v_in_flight = NOMEM(PyLong_FromLongLong(in_flight + 1))) ||
        !(v_queued = NOMEM(PyLong_FromLongLong(queued + size))) ||
        !(v_last = NOMEM(PyFloat_FromDouble(now))) ||
        (timed && !(v_gap = NOMEM(PyFloat_FromDouble(gap_avg + (gap - gap_avg) / 4)))) ||
        (kind == KIND_SOCK && (!(v_sent_n = NOMEM(PyLong_FromLongLong(nsent + 1))) ||
                               !(v_mark = NOMEM(PyLong_FromLongLong(nsent))))))
        goto error;
    if (NOMEM_INT(PyDict_SetItem(s->ch_pending, corr_obj, b)) < 0) goto error;
    if (NOMEM_INT(PyDict_SetItem(s->sent, id_obj, b)) < 0) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (PyDict_DelItem(s->ch_pending, corr_obj) < 0) PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        goto error;
    }
    const char *kp = key == Py_None ? NULL : PyBytes_AS_STRING(key);
    const char *vp = value == Py_None ? NULL : PyBytes_AS_STRING(value);
    int32_t kln = key == Py_None ? -1 : (int32_t)kl, vln = value == Py_None ? -1 : (int32_t)vl;
    long long frame_n = FRAME_FIXED + PyBytes_GET_SIZE(pre) + kl + vl;
    int64_t sent = 0;
    int look = 0; /* the socket's SIOCOUTQ look (below) */
    if (kind == KIND_RING) {
        int rc = ((ring_produce_fn)s->ring_produce)(
            (void *)s->ch_a, (void *)s->ch_b, PyBytes_AS_STRING(pre),
            (uint32_t)PyBytes_GET_SIZE(pre), kp, kln, vp, vln, ts, corr, (uint16_t)s->api,
            (int)s->ch_c, hold);
        if (rc != 1) goto unwritten; /* held, no room now, or too large: nothing was written */
        sent = frame_n;
    } else {
        /* LazySocketChannel.send_record's rule: SIOCOUTQ is looked at only when two requests
         * or more may be unread (unanswered, and written since a look found nothing unread);
         * bytes unread then hand the record to the general path, whose reap and unread()
         * decide whether it is held. (pending holds this record already: "more than one"
         * before it is more than two now.) */
        if (hold && now - last_send < s->unread_recent && PyDict_GET_SIZE(s->ch_pending) > 2) {
            long long mark;
            if (attr_long(s->ch_dict, ch, s_read_mark, &mark) < 0) goto unwritten_error;
            look = nsent - mark > 1;
        }
        sent = ((sock_produce_fn)s->sock_produce)(
            (int)s->ch_a, (char *)s->ch_b, (uint64_t)s->ch_c, PyBytes_AS_STRING(pre),
            (uint32_t)PyBytes_GET_SIZE(pre), kp, kln, vp, vln, ts, corr, (uint16_t)s->api,
            look);
        if (sent == SEND_DECLINED) goto unwritten; /* unread bytes: nothing was built or sent */
        if (sent == -1 || sent == -2) goto unwritten; /* not built: nothing was sent */
    }
    /* Written (or, on the socket, begun): commit what _send_one and send_record commit, with
     * the objects made above, into attributes that exist (nothing here allocates). */
    if ((timed && put_attr(s->ch_dict, ch, s_send_gap, v_gap) < 0) ||
        put_attr(s->ch_dict, ch, s_last_send, v_last) < 0 ||
        (kind == KIND_SOCK && ((look && put_attr(s->ch_dict, ch, s_read_mark, v_mark) < 0) ||
                               put_attr(s->ch_dict, ch, s_sent_n, v_sent_n) < 0)) ||
        put_attr(s->pdict, producer, s_in_flight, v_in_flight) < 0 ||
        put_attr(s->pdict, producer, s_queued, v_queued) < 0)
        goto error;
    /* A frame the socket took only part of is finished before any Python code runs:
     * Condition.notify_all is Python code, during which another thread could write on the
     * socket after the half frame; the I/O thread is told after the rest (below). */
    int partial = sent != frame_n;
    if (notify && !partial) {
        PyObject *x = PyObject_CallNoArgs(s->notify_all);
        if (x == NULL) goto error;
        Py_DECREF(x);
    }
    got_mutex = 0;
    if (release(s->mutex_release) < 0) goto error;
    if (partial) {
        /* A full socket buffer took part of the frame (or none), or send(2) failed: the rest
         * by sendall, with the I/O and channel locks held as the Python path holds them (both
         * free: looked at above, and no Python code has run since). */
        int g = try_acquire(s, s->io_acquire);
        if (g == 1 && (g = try_acquire(s, ch_acq)) != 1) release(s->io_release);
        if (g != 1) {
            if (g == 0)
                PyErr_SetString(PyExc_RuntimeError,
                                "edgebus: a lock was taken during a one-step send's partial write");
            goto error;
        }
        PyObject *x = PyObject_CallFunction(s->send_rest, "OOOLLO", producer, ch, b,
                                            (long long)sent, frame_n, corr_obj);
        int e1 = release(ch_rel), e2 = release(s->io_release);
        if (x == NULL || e1 < 0 || e2 < 0) {
            Py_XDECREF(x);
            goto error;
        }
        Py_DECREF(x);
        if (notify) { /* the I/O thread must learn this batch's deadline, under the mutex */
            PyObject *m = PyObject_CallNoArgs(s->mutex_acquire);
            if (m == NULL) goto error;
            Py_DECREF(m);
            x = PyObject_CallNoArgs(s->notify_all);
            int e3 = release(s->mutex_release);
            if (x == NULL || e3 < 0) {
                Py_XDECREF(x);
                goto error;
            }
            Py_DECREF(x);
        }
    }
    s->n_c++;
    res = f;
    f = NULL;
    goto done;

unwritten_error:
    /* an error before the write: the record's entries go, the error stays */
    {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (PyDict_DelItem(s->ch_pending, corr_obj) < 0) PyErr_Clear();
        if (PyDict_DelItem(s->sent, id_obj) < 0) PyErr_Clear();
        PyErr_Restore(et, ev, tb);
    }
    goto error;
unwritten:
    /* nothing was written: the record's entries go (deleting allocates nothing) */
    if (PyDict_DelItem(s->ch_pending, corr_obj) < 0 || PyDict_DelItem(s->sent, id_obj) < 0)
        goto error;
python:
    /* Declined after the arguments were taken: the record must wait or batch (held, open or
     * ready batches, a lock taken, no channel, ...): Producer._send_held, send()'s general
     * path, without running send()'s argument handling and _send_one again. */
    if (got_mutex) {
        got_mutex = 0;
        if (release(s->mutex_release) < 0) goto error;
    }
    Py_CLEAR(b);
    Py_CLEAR(f);
    s->n_py++;
    if (ts_obj == NULL && !(ts_obj = PyLong_FromLongLong(ts))) goto error;
    res = PyObject_CallFunction(s->send_held, "OlOOO", topic, p, key, value, ts_obj);
    goto done;
error:
    if (got_mutex) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        release(s->mutex_release);
        PyErr_Restore(et, ev, tb);
    }
    res = NULL;
done:
    Py_XDECREF(b);
    Py_XDECREF(f);
    Py_XDECREF(ts_obj);
    Py_XDECREF(id_obj);
    Py_XDECREF(corr_obj);
    Py_XDECREF(v_in_flight);
    Py_XDECREF(v_queued);
    Py_XDECREF(v_last);
    Py_XDECREF(v_gap);
    Py_XDECREF(v_sent_n);
    Py_XDECREF(v_mark);
    Py_XDECREF(cls);
    Py_XDECREF(pre);
    Py_XDECREF(ch_acq);
    Py_XDECREF(ch_rel);
    Py_DECREF(ch);
    return res;
}

static PyObject *Sender_call(PyObject *self, PyObject *args, PyObject *kw) {
    return PyVectorcall_Call(self, args, kw);
}

static PyObject *Sender_counts(Sender *s, PyObject *unused) {
    return Py_BuildValue("(KK)", s->n_c, s->n_py);
}

static PyObject *Sender_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Sender *s = (Sender *)type->tp_alloc(type, 0);
    if (s != NULL) {
        s->ch_kind = -1;
        s->vectorcall = Sender_vectorcall;
    }
    return (PyObject *)s;
}

static PyMethodDef Sender_methods[] = {
    {"counts", (PyCFunction)Sender_counts, METH_NOARGS,
     "(sends made in C, sends handed to the Python path)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgebus._onestep.Sender",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A producer's one-record send() in C (edgebus/onestep.c).",
    .tp_new = Sender_new,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_traverse = (traverseproc)Sender_traverse,
    .tp_clear = (inquiry)Sender_clear,
    .tp_call = Sender_call,
    .tp_vectorcall_offset = offsetof(Sender, vectorcall),
    .tp_methods = Sender_methods,
};


/* ---- The acknowledgements of one-step sends, taken in bulk (fast_acks.deliver in C) ---------
 *
 * deliver(ch, buf, whole) -> (frames taken, where the rest starts), as
 * edgebus/client/fast_acks.py `deliver`: walks the whole frames at the start of buf; every
 * successful PRODUCE answer whose pending entry is a one-step send (`_OneSend`) is taken and
 * settled here (what Producer._one_step_acked does), in response order. At the first frame
 * that is anything else the ones taken are settled and the rest of buf is handed to the Python
 * walk (`configure`'s py_deliver), which does everything else as before. While another thread
 * holds the channel's lock (a writer) the whole buffer goes to the Python walk, which waits
 * for it; while another holds the producer's mutex the settling goes to _one_step_acked,
 * which waits for it.
 */
static PyObject *g_py_deliver, *g_one_send_type, *g_run_callbacks;
static PyObject *s_pending, *s_lock, *s_owner, *s_done, *s_base, *s_timestamp, *s_event,
    *s_callbacks, *s_mutex, *s_results_lock, *s_sent_d, *s_counts, *s_drain_held, *s_blocked,
    *s_flushing, *s_open, *s_cond, *s_one_step_acked, *s_rec_total,
    *s_batch_total, *s_notify_all, *s_acquire, *s_release, *s_locked, *s_empty, *s_dict;
static long g_header = 64;

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

static PyObject *onestep_configure(PyObject *m, PyObject *args) {
    PyObject *py_deliver, *one_send_type, *run_callbacks;
    long header;
    if (!PyArg_ParseTuple(args, "OOOl", &py_deliver, &one_send_type, &run_callbacks, &header))
        return NULL;
    if (!PyType_Check(one_send_type)) {
        PyErr_SetString(PyExc_TypeError, "one_send_type must be a type");
        return NULL;
    }
    Py_XSETREF(g_py_deliver, Py_NewRef(py_deliver));
    Py_XSETREF(g_one_send_type, Py_NewRef(one_send_type));
    Py_XSETREF(g_run_callbacks, Py_NewRef(run_callbacks));
    g_header = header;
    Py_RETURN_NONE;
}

static uint32_t u32le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int64_t i64le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return (int64_t)v;
}

static PyObject *call_method0(PyObject *o, PyObject *name) {
    return PyObject_CallMethodNoArgs(o, name);
}

/* lock.acquire() (waiting) or lock.acquire(False); 1 got, 0 not, -1 error. */
static int lock_acquire(PyObject *lock, int wait) {
    PyObject *r = wait ? PyObject_CallMethodNoArgs(lock, s_acquire)
                       : PyObject_CallMethodOneArg(lock, s_acquire, Py_False);
    if (r == NULL) return -1;
    int got = r == Py_True;
    Py_DECREF(r);
    return got;
}

/* lock.locked(): 1 held, 0 free, -1 error. */
static int is_locked_obj(PyObject *lock) {
    PyObject *r = PyObject_CallMethodNoArgs(lock, s_locked);
    if (r == NULL) return -1;
    int held = r == Py_True;
    Py_DECREF(r);
    return held;
}

static int lock_release(PyObject *lock) {
    PyObject *r = PyObject_CallMethodNoArgs(lock, s_release);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}


/* Put acked[0..n) back into pending (their answers were taken but could not be settled): the
 * caller's error ends the channel (the reader's, or a reap's _deferred), whose loss gives each
 * an outcome; one already settled is skipped there (_finish). Best effort: the keys are the
 * walk's own, so only a dict that must grow allocates. */
static void restore(PyObject *pending, acked_t *acked, Py_ssize_t n) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    for (Py_ssize_t j = 0; j < n; j++)
        if (PyDict_SetItem(pending, acked[j].key, acked[j].b) < 0) PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

static void release_acked(acked_t *acked, Py_ssize_t n) {
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_DECREF(acked[j].b);
        Py_DECREF(acked[j].key);
    }
}

/* Settle acked[0..n) (Producer._one_step_acked, in C); consumes the references. On an error
 * (-1) the ones not settled are back in pending (restore). Every object the changes need is
 * made first (pass 1, which changes nothing), so that a failed allocation leaves nothing half
 * done: the stores of pass 2 go into existing attributes and keys. */
static int settle(PyObject *pending, acked_t *acked, Py_ssize_t n) {
    if (n == 0) return 0;
    struct {
        PyObject *id, *base, *ts; /* made in pass 1; id NULL: already settled, skipped */
        PyObject *ev, *cbs;       /* its event and callbacks to run; ev NULL: none */
        long long size;
    } run[ACKED_MAX];
    int rc = -1, restored = 0;
    PyObject *owner = NULL, *od = NULL, *mutex = NULL, *rlock = NULL, *sent = NULL, *counts = NULL;
    PyObject *v_in_flight = NULL, *v_queued = NULL, *v_rec = NULL, *v_batch = NULL;
    Py_ssize_t made = 0;
    owner = PyObject_GetAttr(acked[0].b, s_owner);
    if (owner == NULL || owner == Py_None) {
        if (owner == Py_None) PyErr_SetString(PyExc_RuntimeError, "a one-step send without its producer");
        goto out;
    }
    if (!(od = PyObject_GetAttr(owner, s_dict)) || !PyDict_CheckExact(od)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the producer's __dict__ must be a dict");
        goto out;
    }
    if (!(mutex = get_attr(od, owner, s_mutex))) goto out;
    int got = lock_acquire(mutex, 0);
    if (got < 0) goto out;
    if (!got) {
        /* Another thread holds the producer's lock: the Python settling waits for it. */
        PyObject *list = PyList_New(n);
        if (list == NULL) goto out;
        for (Py_ssize_t j = 0; j < n; j++) {
            PyObject *t = Py_BuildValue("(OLL)", acked[j].b, (long long)acked[j].base,
                                        (long long)acked[j].ts);
            if (t == NULL) {
                Py_DECREF(list);
                goto out;
            }
            PyList_SET_ITEM(list, j, t);
        }
        PyObject *r = PyObject_CallMethodOneArg(owner, s_one_step_acked, list);
        Py_DECREF(list);
        if (r == NULL) goto out;
        Py_DECREF(r);
        rc = 0;
        goto out;
    }
    /* Under the producer's mutex, really held: Python code may run (events, callbacks). */
    long long first_in_flight, taken = 0, queued = 0, qb, rec, batch, settled = 0, settled_bytes = 0;
    if (attr_long(od, owner, s_in_flight, &first_in_flight) < 0 ||
        !(rlock = get_attr(od, owner, s_results_lock)) ||
        !(sent = get_attr(od, owner, s_sent_d)) || !(counts = get_attr(od, owner, s_counts)) ||
        !PyDict_CheckExact(sent) || !PyDict_CheckExact(counts)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "the producer's tables must be dicts");
        goto unlock;
    }
    /* Pass 1: what is to be done, and every object it needs. */
    for (; made < n; made++) {
        PyObject *b = acked[made].b;
        run[made].id = run[made].base = run[made].ts = run[made].ev = run[made].cbs = NULL;
        int done = attr_true(NULL, b, s_done);
        if (done < 0) goto unlock;
        if (done) continue; /* already settled (timed out, or the connection failed it) */
        long long size;
        if (attr_long(NULL, b, s_size, &size) < 0 ||
            !(run[made].base = NOMEM(PyLong_FromLongLong(acked[made].base))) ||
            !(run[made].ts = NOMEM(PyLong_FromLongLong(acked[made].ts))) ||
            !(run[made].id = NOMEM(PyLong_FromVoidPtr(b)))) {
            made++; /* its references are released below */
            goto unlock;
        }
        run[made].size = size;
        taken++;
        queued += size;
    }
    PyObject *vr = PyDict_GetItemWithError(counts, s_rec_total),
             *vb = PyDict_GetItemWithError(counts, s_batch_total);
    if (vr == NULL || vb == NULL) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "the producer's send counts");
        goto unlock;
    }
    if (attr_long(od, owner, s_queued, &qb) < 0 || (rec = PyLong_AsLongLong(vr)) == -1 ||
        (batch = PyLong_AsLongLong(vb)) == -1 ||
        !(v_in_flight = NOMEM(PyLong_FromLongLong(first_in_flight - taken))) ||
        !(v_queued = NOMEM(PyLong_FromLongLong(qb - (queued - taken * g_header)))) ||
        !(v_rec = NOMEM(PyLong_FromLongLong(rec + taken))) ||
        !(v_batch = NOMEM(PyLong_FromLongLong(batch + taken))))
        goto unlock;
    /* Pass 2, in response order: BatchResult.done for each under the results lock (its
     * invariant with add_callback), held across the records nobody waits on and without
     * callbacks; one with an event or callbacks is marked, the lock released and its event set
     * and callbacks run before the next is marked, as the Python path does (a callback added
     * meanwhile, or a get(), sees the records settled in order). A failure there (a callback's
     * BaseException, ev.set()) is kept, the first one, and raised once every record is settled
     * and counted: each still gets its outcome. The stores go into what exists: nothing else
     * fails once the lock is held. */
    PyObject *cb_et = NULL, *cb_ev = NULL, *cb_tb = NULL;
    int bad = 0, locked = 0;
    Py_ssize_t i = 0;
    for (; i < n && !bad; i++) {
        PyObject *b = acked[i].b;
        if (run[i].id == NULL) continue;
        if (!locked) {
            if (lock_acquire(rlock, 1) != 1) {
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "the results lock");
                bad = 1;
                break;
            }
            locked = 1;
        }
        int pr = PyDict_Contains(sent, run[i].id); /* sent.pop(id(r), None) */
        if (pr > 0) pr = PyDict_DelItem(sent, run[i].id);
        PyObject *ev = NULL, *cbs = NULL;
        bad = pr < 0 || PyObject_SetAttr(b, s_base, run[i].base) < 0 ||
              PyObject_SetAttr(b, s_timestamp, run[i].ts) < 0 ||
              PyObject_SetAttr(b, s_done, Py_True) < 0 || !(ev = PyObject_GetAttr(b, s_event)) ||
              !(cbs = PyObject_GetAttr(b, s_callbacks));
        int has_cbs = 0;
        if (!bad && (has_cbs = PyObject_IsTrue(cbs)) > 0)
            bad = PyObject_SetAttr(b, s_callbacks, s_empty) < 0;
        if (has_cbs < 0) bad = 1;
        if (!bad && (ev != Py_None || has_cbs)) {
            run[i].ev = ev;
            run[i].cbs = has_cbs ? cbs : Py_NewRef(s_empty);
            if (has_cbs) cbs = NULL;
            ev = NULL;
        }
        Py_XDECREF(ev);
        Py_XDECREF(cbs);
        if (bad) { /* a store into an existing attribute failed: i stays unsettled */
            if (run[i].ev == NULL) { /* its done flag may be set: undo what can be */
                PyObject *et, *ev2, *tb;
                PyErr_Fetch(&et, &ev2, &tb);
                if (PyObject_SetAttr(b, s_done, Py_False) < 0) PyErr_Clear();
                PyErr_Restore(et, ev2, tb);
            }
            break;
        }
        settled++;
        settled_bytes += run[i].size;
        if (run[i].ev == NULL) continue;
        locked = 0;
        if (lock_release(rlock) < 0) {
            bad = 1;
            i++; /* i is settled */
            break;
        }
        PyObject *r = PyObject_CallFunctionObjArgs(g_run_callbacks, b, run[i].ev, run[i].cbs, NULL);
        if (r == NULL) {
            if (cb_et == NULL) PyErr_Fetch(&cb_et, &cb_ev, &cb_tb);
            else PyErr_Clear();
        }
        Py_XDECREF(r);
    }
    if (locked) {
        PyObject *et, *ev2, *tb;
        PyErr_Fetch(&et, &ev2, &tb);
        if (lock_release(rlock) < 0 && !bad) bad = 1;
        else if (et != NULL) PyErr_Restore(et, ev2, tb);
        else if (bad && !PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "settle");
    }
    /* The counts for the records settled (all of them: the values made in pass 1). */
    if (settled == taken) {
        PyObject *et, *ev2, *tb;
        PyErr_Fetch(&et, &ev2, &tb);
        int cbad = put_attr(od, owner, s_in_flight, v_in_flight) < 0 ||
                   put_attr(od, owner, s_queued, v_queued) < 0 ||
                   PyDict_SetItem(counts, s_rec_total, v_rec) < 0 ||
                   PyDict_SetItem(counts, s_batch_total, v_batch) < 0;
        if (et != NULL) {
            if (cbad) PyErr_Clear();
            PyErr_Restore(et, ev2, tb);
        }
        bad = bad || cbad;
    } else if (settled > 0) { /* broken off (rare): count what was settled, best effort */
        PyObject *et, *ev2, *tb;
        PyErr_Fetch(&et, &ev2, &tb);
        if (set_long(od, owner, s_in_flight, first_in_flight - settled) < 0 ||
            set_long(od, owner, s_queued, qb - (settled_bytes - settled * g_header)) < 0)
            PyErr_Clear();
        PyObject *x = PyLong_FromLongLong(rec + settled), *y = PyLong_FromLongLong(batch + settled);
        if (x == NULL || y == NULL || PyDict_SetItem(counts, s_rec_total, x) < 0 ||
            PyDict_SetItem(counts, s_batch_total, y) < 0)
            PyErr_Clear();
        Py_XDECREF(x);
        Py_XDECREF(y);
        PyErr_Restore(et, ev2, tb);
    }
    /* Those not settled go back to pending (the caller's error ends the channel). */
    if (bad) {
        restore(pending, acked + i, n - i);
        restored = 1;
        Py_XDECREF(cb_et);
        Py_XDECREF(cb_ev);
        Py_XDECREF(cb_tb);
        goto unlock;
    }
    restored = 1;
    if (bad) goto unlock;
    /* _finish's wake-ups (fast_send._one_step_acked): who can use the room these made */
    int held = 0, r1;
    if ((r1 = attr_true(od, owner, s_drain_held)) < 0) goto unlock;
    if (r1) {
        if (put_attr(od, owner, s_drain_held, Py_False) < 0) goto unlock;
        PyObject *open = get_attr(od, owner, s_open);
        if (open == NULL) goto unlock;
        held = PyObject_IsTrue(open);
        Py_DECREF(open);
        if (held < 0) goto unlock;
    }
    int wake = held;
    PyObject *names[3] = {s_blocked, s_flushing, s_closed};
    for (int k = 0; k < 3 && !wake; k++) {
        if ((r1 = attr_true(od, owner, names[k])) < 0) goto unlock;
        wake = r1;
    }
    if (!wake) {
        long long mif;
        int ready_or_open;
        PyObject *ready = get_attr(od, owner, s_ready), *open = NULL;
        if (ready == NULL) goto unlock;
        ready_or_open = PyObject_IsTrue(ready);
        Py_DECREF(ready);
        if (ready_or_open == 0) {
            if (!(open = get_attr(od, owner, s_open))) goto unlock;
            ready_or_open = PyObject_IsTrue(open);
            Py_DECREF(open);
        }
        if (ready_or_open < 0 || attr_long(od, owner, s_max_in_flight, &mif) < 0) goto unlock;
        wake = ready_or_open && first_in_flight >= mif;
    }
    if (wake) {
        PyObject *cond = get_attr(od, owner, s_cond);
        if (cond == NULL) goto unlock;
        PyObject *r = call_method0(cond, s_notify_all);
        Py_DECREF(cond);
        if (r == NULL) goto unlock;
        Py_DECREF(r);
    }
    rc = 0;
    if (cb_et != NULL) { /* a callback's failure, raised now that everything is settled */
        PyErr_Restore(cb_et, cb_ev, cb_tb);
        rc = -1;
    }
unlock:
    if (rc < 0) {
        PyObject *et, *ev2, *tb;
        PyErr_Fetch(&et, &ev2, &tb);
        lock_release(mutex);
        PyErr_Restore(et, ev2, tb);
    } else if (lock_release(mutex) < 0) {
        rc = -1;
    }
out:
    if (rc < 0 && !restored) restore(pending, acked, n);
    for (Py_ssize_t j = 0; j < made; j++) {
        Py_XDECREF(run[j].id);
        Py_XDECREF(run[j].base);
        Py_XDECREF(run[j].ts);
        Py_XDECREF(run[j].ev);
        Py_XDECREF(run[j].cbs);
    }
    release_acked(acked, n);
    Py_XDECREF(owner);
    Py_XDECREF(od);
    Py_XDECREF(mutex);
    Py_XDECREF(rlock);
    Py_XDECREF(sent);
    Py_XDECREF(counts);
    Py_XDECREF(v_in_flight);
    Py_XDECREF(v_queued);
    Py_XDECREF(v_rec);
    Py_XDECREF(v_batch);
    return rc;
}

/* The walk of deliver: the whole frames at buf[*pos..end) that are successful answers to
 * one-step sends in `pending` (a dict, looked at as under the channel's lock: no Python code
 * runs here), taken out of pending into acked[*nacked..] (strong references), *pos and *taken
 * moved past them. Stops at the first frame that is anything else, partial (unless whole), too
 * large, or when acked is full; returns whether a frame stopped it (1: the Python walk must
 * judge what is left; 0: all taken or only a partial frame left), -1 on error (acked holds
 * what was taken: the caller releases it). */
static int walk(PyObject *pending, const unsigned char *buf, Py_ssize_t end, int whole,
                acked_t *acked, Py_ssize_t *nacked, Py_ssize_t *pos_p, Py_ssize_t *taken) {
    Py_ssize_t pos = *pos_p;
    int stopped = 0;
    while (end - pos >= RESP_HEAD) {
        uint32_t n = u32le(buf + pos), corr = u32le(buf + pos + 4);
        int16_t err = (int16_t)(buf[pos + 8] | buf[pos + 9] << 8);
        Py_ssize_t nxt = pos + FRAME_LEN + (Py_ssize_t)n;
        if (!whole && (n > SMALL_FRAME || n < RESP_HEAD - FRAME_LEN || nxt > end)) {
            stopped = n > SMALL_FRAME || n < RESP_HEAD - FRAME_LEN; /* the buffer's limits judge */
            break;
        }
        Py_ssize_t body = (Py_ssize_t)n - (RESP_HEAD - FRAME_LEN);
        if (err || body < STR_SIZE + RUN_SIZE || nxt > end ||
            (Py_ssize_t)(buf[pos + RESP_HEAD] | buf[pos + RESP_HEAD + 1] << 8) != body - STR_SIZE - RUN_SIZE) {
            stopped = 1; /* not a plain answer: the Python walk */
            break;
        }
        PyObject *key = NOMEM(PyLong_FromUnsignedLong(corr));
        if (key == NULL) return -1;
        PyObject *cb = PyDict_GetItemWithError(pending, key); /* borrowed */
        if (cb == NULL || !PyObject_TypeCheck(cb, (PyTypeObject *)g_one_send_type)) {
            Py_DECREF(key);
            if (PyErr_Occurred()) return -1;
            stopped = 1; /* another request's answer, or none: the Python walk */
            break;
        }
        if (*nacked == ACKED_MAX) {
            Py_DECREF(key);
            stopped = 1; /* the Python walk (or the next call) takes the rest */
            break;
        }
        Py_INCREF(cb);
        if (PyDict_DelItem(pending, key) < 0) {
            Py_DECREF(cb);
            Py_DECREF(key);
            return -1;
        }
        acked[*nacked].b = cb;
        acked[*nacked].key = key;
        acked[*nacked].base = i64le(buf + nxt - RUN_SIZE + 4);
        acked[*nacked].ts = i64le(buf + nxt - RUN_SIZE + 12);
        (*nacked)++;
        pos = nxt;
        (*taken)++;
    }
    *pos_p = pos;
    return stopped;
}

/* With settle's exception set: buf[pos:] to the Python walk with that exception as its
 * `failed` (it settles the rest, hands a socket's partial frame to the FrameBuffer, and raises
 * it, or a refusal); the exception set after is the walk's, or settle's if the walk could not
 * be called. */
static void deliver_rest_failed(PyObject *ch, PyObject *bufobj, Py_ssize_t pos, PyObject *whole) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb != NULL) PyException_SetTraceback(ev, tb);
    PyObject *mv = PyMemoryView_FromObject(bufobj), *rest = NULL, *r = NULL;
    if (mv != NULL && (rest = PySequence_GetSlice(mv, pos, PY_SSIZE_T_MAX)) != NULL)
        r = PyObject_CallFunctionObjArgs(g_py_deliver, ch, rest, whole, ev, NULL);
    Py_XDECREF(mv);
    Py_XDECREF(rest);
    if (r == NULL && rest != NULL) { /* the walk raised (its own `failed`): that one */
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return;
    }
    Py_XDECREF(r); /* not called (no memory), or returned: settle's exception stands */
    PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

static PyObject *onestep_deliver(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "deliver(ch, buf, whole)");
        return NULL;
    }
    if (g_py_deliver == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_onestep.configure was not called");
        return NULL;
    }
    PyObject *ch = args[0], *bufobj = args[1];
    int whole = PyObject_IsTrue(args[2]);
    if (whole < 0) return NULL;
    PyObject *pending = PyObject_GetAttr(ch, s_pending);  /* once a walk: the generic way */
    if (pending == NULL) return NULL;
    PyObject *lock = NULL, *res = NULL;
    Py_buffer view;
    int have_view = 0;
    acked_t acked[ACKED_MAX];
    Py_ssize_t nacked = 0, pos = 0, taken = 0;
    if (!PyDict_CheckExact(pending) || !(lock = PyObject_GetAttr(ch, s_lock))) goto hand_all;
    PyObject *lr = PyObject_CallMethodNoArgs(lock, s_locked);
    if (lr == NULL) goto error;
    int locked = lr == Py_True;
    Py_DECREF(lr);
    if (locked) goto hand_all; /* a writer has the channel: the Python walk waits for it */
    if (PyObject_GetBuffer(bufobj, &view, PyBUF_SIMPLE) < 0) goto error;
    have_view = 1;
    Py_ssize_t end = view.len;
    if (walk(pending, view.buf, end, whole, acked, &nacked, &pos, &taken) < 0) goto error;
    int more = end - pos >= RESP_HEAD; /* stopped at a frame the Python walk must judge */
    PyBuffer_Release(&view);
    have_view = 0;
    Py_ssize_t settled = nacked;
    nacked = 0;
    if (settle(pending, acked, settled) < 0) {
        /* settle raises after settling all it could (a callback's KeyboardInterrupt): the rest
         * still goes to the Python walk, which raises it once that is settled too (else the
         * rest's answers were lost, and on the socket the next read started inside a frame). */
        if (pos < end) deliver_rest_failed(ch, bufobj, pos, args[2]);
        goto error;
    }
    if (!more) {
        res = Py_BuildValue("(nn)", taken, pos);
        goto done;
    }
    /* The rest by the Python walk, from this frame on. */
    PyObject *mv = PyMemoryView_FromObject(bufobj), *rest = NULL;
    if (mv == NULL) goto error;
    rest = PySequence_GetSlice(mv, pos, PY_SSIZE_T_MAX);
    Py_DECREF(mv);
    if (rest == NULL) goto error;
    PyObject *r = PyObject_CallFunctionObjArgs(g_py_deliver, ch, rest, args[2], NULL);
    Py_DECREF(rest);
    if (r == NULL) goto error;
    Py_ssize_t t2, p2;
    if (!PyArg_ParseTuple(r, "nn", &t2, &p2)) {
        Py_DECREF(r);
        goto error;
    }
    Py_DECREF(r);
    res = Py_BuildValue("(nn)", taken + t2, pos + p2);
    goto done;
hand_all:
    res = PyObject_CallFunctionObjArgs(g_py_deliver, ch, bufobj, args[2], NULL);
    goto done;
error:
    restore(pending, acked, nacked); /* taken by the walk, not settled: back for the loss */
    release_acked(acked, nacked);
    if (have_view) PyBuffer_Release(&view);
    res = NULL;
done:
    Py_XDECREF(lock);
    Py_DECREF(pending);
    return res;
}

/* ---- LazySocketChannel.reap in C (edgebus/client/socket_acks.py) ----------------------------
 *
 * sock_reap(ch, force): what reap() and _take(block=False) do, for the common read (nothing
 * buffered in the channel's FrameBuffer, answers to one-step sends): the gate (the reader
 * waits lazily; a request written since the last reap, unless force), _reap_lock tried, one
 * recv(MSG_DONTWAIT) into a buffer of the heap's, the walk above and settle. Whatever else
 * came (an error, another request's answer, a partial frame, bytes already buffered, the
 * end of the stream) goes as bytes to ch._take_data, the Python rest of _take, after the
 * answers before it were settled (response order). An Exception on the way is the channel's
 * `_deferred` (its reader ends the channel with it), as in reap().
 */
#define REAP_RECV (64 * 1024) /* one read's most; what does not fit stays in the socket */

static PyObject *s_lazy_wait, *s_reaped_at, *s_reap_lock, *s_deferred, *s_closed_ch, *s_proto,
    *s_frames, *s_fbuf, *s_fpos, *s_sock, *s_fileno, *s_take_data, *s_reaped, *s_nudge;

/* The C reap's body, with _reap_lock held, reading into buf (REAP_RECV bytes); -1 with an
 * exception set. */
static int reap_take_into(PyObject *ch, PyObject *d, PyObject *pending, unsigned char *buf) {
    PyObject *lock = get_attr(d, ch, s_lock);
    if (lock == NULL) return -1;
    int locked = is_locked_obj(lock);
    Py_DECREF(lock);
    if (locked < 0) return -1;
    /* Bytes already buffered (a frame's start): the Python rest adds to them. */
    Py_ssize_t buffered = 1;
    PyObject *proto = get_attr(d, ch, s_proto), *frames = NULL, *fb = NULL, *fp = NULL;
    if (proto != NULL && (frames = PyObject_GetAttr(proto, s_frames)) != NULL &&
        (fb = PyObject_GetAttr(frames, s_fbuf)) != NULL &&
        (fp = PyObject_GetAttr(frames, s_fpos)) != NULL && PyByteArray_CheckExact(fb) &&
        PyLong_CheckExact(fp))
        buffered = PyByteArray_GET_SIZE(fb) - PyLong_AsSsize_t(fp);
    Py_XDECREF(proto);
    Py_XDECREF(frames);
    Py_XDECREF(fb);
    Py_XDECREF(fp);
    if (PyErr_Occurred()) return -1;
    PyObject *sock = get_attr(d, ch, s_sock);
    if (sock == NULL) return -1;
    PyObject *fdo = PyObject_CallMethodNoArgs(sock, s_fileno); /* -1 once closed: EBADF */
    Py_DECREF(sock);
    if (fdo == NULL) return -1;
    long fd = PyLong_AsLong(fdo);
    Py_DECREF(fdo);
    if (fd == -1 && PyErr_Occurred()) return -1;
    ssize_t got;
    do {
        got = recv((int)fd, buf, REAP_RECV, MSG_DONTWAIT);
    } while (got < 0 && errno == EINTR && !PyErr_CheckSignals());
    if (got < 0) {
        if (PyErr_Occurred()) return -1;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    acked_t acked[ACKED_MAX];
    Py_ssize_t nacked = 0, pos = 0, taken = 0;
    if (got > 0 && !buffered && !locked &&
        walk(pending, buf, got, 0, acked, &nacked, &pos, &taken) < 0) {
        restore(pending, acked, nacked);
        release_acked(acked, nacked);
        return -1;
    }
    /* The rest as bytes before any Python code runs (settle may run some). */
    PyObject *rest = NULL;
    if (got == 0 || pos < got) {
        rest = NOMEM(PyBytes_FromStringAndSize((const char *)buf + pos, got - pos));
        if (rest == NULL) {
            restore(pending, acked, nacked);
            release_acked(acked, nacked);
            return -1;
        }
    }
    if (settle(pending, acked, nacked) < 0) {
        /* settle raises after settling all it could (a callback's KeyboardInterrupt): the rest
         * still goes to the Python walk, or the next read would start inside a frame. */
        if (rest != NULL) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyObject *r = PyObject_CallMethodOneArg(ch, s_take_data, rest);
            Py_XDECREF(r);
            if (r == NULL) PyErr_Clear(); /* the first error is the one raised */
            Py_DECREF(rest);
            PyErr_Restore(et, ev, tb);
        }
        return -1;
    }
    if (rest == NULL) return 0;
    PyObject *r = PyObject_CallMethodOneArg(ch, s_take_data, rest); /* b"": the stream ended */
    Py_DECREF(rest);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* The buffer is the heap's, not the sending thread's stack: a user's thread may have a small
 * stack (threading.stack_size(64 KiB) crashed with it on the stack), and a static one could be
 * shared by two producers' reaps when Python code (settle) lets another thread run. */
static int reap_take(PyObject *ch, PyObject *d, PyObject *pending) {
    unsigned char *buf = PyMem_RawMalloc(REAP_RECV);
    if (buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int r = reap_take_into(ch, d, pending, buf);
    PyMem_RawFree(buf);
    return r;
}

static PyObject *onestep_sock_reap(PyObject *m, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *force_arg = nargs > 1 ? args[1] : NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) == 1 && nargs == 1 &&
        PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "force") == 0)
        force_arg = args[1];
    else if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)
        nargs = -1;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "sock_reap(ch, force=False)");
        return NULL;
    }
    if (g_py_deliver == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_onestep.configure was not called");
        return NULL;
    }
    PyObject *ch = args[0];
    int force = force_arg != NULL ? PyObject_IsTrue(force_arg) : 0;
    if (force < 0) return NULL;
    PyObject *d = PyObject_GetAttr(ch, s_dict);
    if (d == NULL) return NULL;
    if (!PyDict_CheckExact(d)) {
        Py_DECREF(d);
        PyErr_SetString(PyExc_TypeError, "a channel's __dict__ must be a dict");
        return NULL;
    }
    PyObject *res = NULL, *rlock = NULL, *sent = NULL, *pending = NULL;
    int r = attr_true(d, ch, s_lazy_wait);
    if (r <= 0) goto gate;
    if (!(sent = get_attr(d, ch, s_sent_n))) goto out;
    if (!force) {
        PyObject *at = get_attr(d, ch, s_reaped_at);
        if (at == NULL) goto out;
        r = PyObject_RichCompareBool(sent, at, Py_EQ);
        Py_DECREF(at);
        if (r != 0) goto gate;
    }
    if (!(rlock = get_attr(d, ch, s_reap_lock))) goto out;
    if ((r = lock_acquire(rlock, 0)) <= 0) goto gate;
    /* _reap_lock held: released below whatever happens */
    int bad = 0;
    PyObject *x;
    if ((r = attr_true(d, ch, s_lost)) == 0 && (x = get_attr(d, ch, s_deferred)) != NULL &&
        (Py_DECREF(x), x == Py_None) && (r = attr_true(d, ch, s_closed_ch)) == 0) {
        Py_ssize_t n = -1;
        if (put_attr(d, ch, s_reaped_at, sent) < 0 || !(pending = get_attr(d, ch, s_pending)) ||
            !PyDict_CheckExact(pending)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "_pending must be a dict");
            bad = 1;
        } else {
            n = PyDict_GET_SIZE(pending);
            bad = reap_take(ch, d, pending) < 0;
        }
        long long reaped;
        if (!bad && (attr_long(d, ch, s_reaped, &reaped) < 0 ||
                     set_long(d, ch, s_reaped, reaped + n - PyDict_GET_SIZE(pending)) < 0))
            bad = 1;
        if (bad && PyErr_ExceptionMatches(PyExc_Exception)) {
            /* EOF, a broken stream: the reader ends the channel with it (reap's except) */
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyErr_NormalizeException(&et, &ev, &tb);
            if (tb != NULL) PyException_SetTraceback(ev, tb);
            bad = put_attr(d, ch, s_deferred, ev) < 0;
            Py_XDECREF(et);
            Py_XDECREF(ev);
            Py_XDECREF(tb);
            if (!bad) {
                PyObject *y = PyObject_CallMethodNoArgs(ch, s_nudge);
                bad = y == NULL;
                Py_XDECREF(y);
            }
        }
    } else if (r < 0 || PyErr_Occurred()) {
        bad = 1;
    }
    if (bad) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        lock_release(rlock);
        PyErr_Restore(et, ev, tb);
        goto out;
    }
    if (lock_release(rlock) < 0) goto out;
    res = Py_NewRef(Py_None);
    goto out;
gate:
    if (r >= 0) res = Py_NewRef(Py_None);
out:
    Py_XDECREF(rlock);
    Py_XDECREF(sent);
    Py_XDECREF(pending);
    Py_DECREF(d);
    return res;
}

static PyObject *onestep_fail_allocation(PyObject *m, PyObject *arg) {
    long k = PyLong_AsLong(arg);
    if (k == -1 && PyErr_Occurred()) return NULL;
    PyObject *r = Py_BuildValue("(ll)", fault_at, fault_hits);
    fault_at = k;
    return r;
}

static PyMethodDef module_methods[] = {
    {"_fail_allocation", (PyCFunction)onestep_fail_allocation, METH_O,
     "_fail_allocation(k) -> (the last k left, failures made): tests only; -1 turns it off"},
    {"configure", (PyCFunction)onestep_configure, METH_VARARGS,
     "configure(py_deliver, one_send_type, run_callbacks, batch_header_size)"},
    {"deliver", (PyCFunction)(void (*)(void))onestep_deliver, METH_FASTCALL,
     "deliver(ch, buf, whole) -> (frames taken, where the rest starts): fast_acks.deliver in C"},
    {"sock_reap", (PyCFunction)(void (*)(void))onestep_sock_reap, METH_FASTCALL | METH_KEYWORDS,
     "sock_reap(ch, force=False): LazySocketChannel.reap in C"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_onestep",
                                    "A producer's one-record send() in C (issue 16).", -1,
                                    module_methods};

#define INTERN(var, text)                                           \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL;

PyMODINIT_FUNC PyInit__onestep(void) {
    INTERN(s_fast, "_fast");
    INTERN(s_value_ser, "value_serializer");
    INTERN(s_key_ser, "key_serializer");
    INTERN(s_txn, "_txn");
    INTERN(s_channel, "_channel");
    INTERN(s_closed, "_closed");
    INTERN(s_ready, "_ready");
    INTERN(s_in_flight, "_in_flight");
    INTERN(s_queued, "_queued_bytes");
    INTERN(s_wake_at, "_sender_wake_at");
    INTERN(s_lost, "lost");
    INTERN(s_fds_closed, "_fds_closed");
    INTERN(s_timed, "_timed");
    INTERN(s_send_gap, "_send_gap");
    INTERN(s_last_send, "_last_send");
    INTERN(s_sent_n, "_sent");
    INTERN(s_read_mark, "_read_mark");
    INTERN(s_size, "size");
    INTERN(s_first_ts, "first_ts");
    INTERN(s_deadline, "deadline");
    INTERN(s_pending, "_pending");
    INTERN(s_lock, "_lock");
    INTERN(s_owner, "owner");
    INTERN(s_done, "_done");
    INTERN(s_base, "base_offset");
    INTERN(s_timestamp, "timestamp");
    INTERN(s_event, "_event");
    INTERN(s_callbacks, "callbacks");
    INTERN(s_mutex, "_mutex");
    INTERN(s_results_lock, "_results_lock");
    INTERN(s_sent_d, "_sent");
    INTERN(s_counts, "_counts");
    INTERN(s_drain_held, "_drain_held");
    INTERN(s_blocked, "_blocked");
    INTERN(s_flushing, "_flushing");
    INTERN(s_open, "_open");
    INTERN(s_max_in_flight, "max_in_flight");
    INTERN(s_cond, "_cond");
    INTERN(s_one_step_acked, "_one_step_acked");
    INTERN(s_rec_total, "record-send-total");
    INTERN(s_batch_total, "batch-send-total");
    INTERN(s_notify_all, "notify_all");
    INTERN(s_acquire, "acquire");
    INTERN(s_release, "release");
    INTERN(s_locked, "locked");
    INTERN(s_dict, "__dict__");
    INTERN(s_reap, "reap");
    INTERN(s_buffer_memory, "buffer_memory");
    INTERN(s_lazy_wait, "_lazy_wait");
    INTERN(s_reaped_at, "_reaped_at");
    INTERN(s_reap_lock, "_reap_lock");
    INTERN(s_deferred, "_deferred");
    INTERN(s_closed_ch, "_closed");
    INTERN(s_proto, "_proto");
    INTERN(s_frames, "frames");
    INTERN(s_fbuf, "_buf");
    INTERN(s_fpos, "_pos");
    INTERN(s_sock, "_sock");
    INTERN(s_fileno, "fileno");
    INTERN(s_take_data, "_take_data");
    INTERN(s_reaped, "reaped");
    INTERN(s_nudge, "_nudge");
    if ((s_empty = PyTuple_New(0)) == NULL) return NULL;
    PyObject *zlib = PyImport_ImportModule("zlib");
    if (zlib != NULL) {
        zlib_crc32 = PyObject_GetAttrString(zlib, "crc32");
        Py_DECREF(zlib);
    }
    if (zlib_crc32 == NULL) PyErr_Clear(); /* no zlib: keyed sends take the Python path */
    if (PyType_Ready(&SenderType) < 0) return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (m == NULL) return NULL;
    Py_INCREF(&SenderType);
    if (PyModule_AddObject(m, "Sender", (PyObject *)&SenderType) < 0) {
        Py_DECREF(&SenderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
