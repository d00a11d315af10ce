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
#include "onestep.h"

PyObject *g_py_deliver, *g_one_send_type, *g_run_callbacks;

long g_header = 64;

PyObject *onestep_configure(PyObject *m, PyObject *args) {
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

/* The walk of deliver: the whole frames at buf[*pos..end) that are successful answers to
 * one-step sends in `pending` (a dict, looked at as under the channel's lock: no Python code
 * runs here), taken out of pending into acked[*nacked..] (strong references), *pos and *taken
 * moved past them. Stops at the first frame that is anything else, partial (unless whole), too
 * large, or when acked is full; returns whether a frame stopped it (1: the Python walk must
 * judge what is left; 0: all taken or only a partial frame left), -1 on error (acked holds
 * what was taken: the caller releases it). */
int onestep_walk(PyObject *pending, const unsigned char *buf, Py_ssize_t end, int whole,
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

PyObject *onestep_deliver(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
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
    if (onestep_walk(pending, view.buf, end, whole, acked, &nacked, &pos, &taken) < 0) goto error;
    int more = end - pos >= RESP_HEAD; /* stopped at a frame the Python walk must judge */
    PyBuffer_Release(&view);
    have_view = 0;
    Py_ssize_t settled = nacked;
    nacked = 0;
    if (onestep_settle(pending, acked, settled) < 0) {
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
    onestep_restore(pending, acked, nacked); /* taken by the walk, not settled: back for the loss */
    onestep_release_acked(acked, nacked);
    if (have_view) PyBuffer_Release(&view);
    res = NULL;
done:
    Py_XDECREF(lock);
    Py_DECREF(pending);
    return res;
}
