/* ---- LazySocketChannel.reap in C (edgebus/client/socket_acks.py) ----------------------------
 *
 * sock_reap(ch, force): what reap() and _take(block=False) do, for the common read (nothing
 * buffered in the channel's FrameBuffer, answers to one-step sends): the gate (the reader
 * waits lazily; a request written since the last reap, unless force), _reap_lock tried, one
 * recv(MSG_DONTWAIT) into a buffer of the heap's, the walk (onestep_acks.c) and settle
 * (onestep_settle.c). Whatever else came (an error, another request's answer, a partial frame,
 * bytes already buffered, the end of the stream) goes as bytes to ch._take_data, the Python
 * rest of _take, after the answers before it were settled (response order). An Exception on
 * the way is the channel's `_deferred` (its reader ends the channel with it), as in reap().
 */
#include "onestep.h"

#define REAP_RECV (64 * 1024) /* one read's most; what does not fit stays in the socket */

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
        onestep_walk(pending, buf, got, 0, acked, &nacked, &pos, &taken) < 0) {
        onestep_restore(pending, acked, nacked);
        onestep_release_acked(acked, nacked);
        return -1;
    }
    /* The rest as bytes before any Python code runs (settle may run some). */
    PyObject *rest = NULL;
    if (got == 0 || pos < got) {
        rest = NOMEM(PyBytes_FromStringAndSize((const char *)buf + pos, got - pos));
        if (rest == NULL) {
            onestep_restore(pending, acked, nacked);
            onestep_release_acked(acked, nacked);
            return -1;
        }
    }
    if (onestep_settle(pending, acked, nacked) < 0) {
        /* settle raises after settling all it could (a callback's KeyboardInterrupt): the rest
         * still goes to the Python walk, or the next read would start inside a frame. */
        if (rest != NULL) {
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            PyObject *r = PyObject_CallMethodOneArg(ch, s_take_data, rest);
            Py_XDECREF(r);
            if (r == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
                /* A broken frame, a refusal, EOF: still the connection's end (the reader ends
                 * the channel with it: ch._end_with), as without the callback; the callback's
                 * exception is the one raised. */
                PyObject *et2, *ev2, *tb2;
                PyErr_Fetch(&et2, &ev2, &tb2);
                PyErr_NormalizeException(&et2, &ev2, &tb2);
                if (tb2 != NULL) PyException_SetTraceback(ev2, tb2);
                PyObject *y = PyObject_CallMethod(ch, "_end_with", "O", ev2);
                Py_XDECREF(y);
                Py_XDECREF(et2);
                Py_XDECREF(ev2);
                Py_XDECREF(tb2);
            }
            PyErr_Clear(); /* the first error is the one raised (another callback's: dropped) */
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

PyObject *onestep_sock_reap(PyObject *m, PyObject *const *args, size_t nargsf,
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
