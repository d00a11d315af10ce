/* edgebus._onestep: a producer's one-record send() (the Sender's vectorcall; the invariants it
 * keeps are in edgebus/onestep.c's module comment). */
#include "onestep.h"

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

/* send(topic, value=None, key=None, headers=None, partition=None, timestamp_ms=None) */
PyObject *onestep_Sender_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
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
        if (x == NULL) {
            /* send_rest raised (an interrupt in its sendall: KeyboardInterrupt): the locks are
             * released with that exception put aside (a call with one set is a SystemError),
             * then it is raised; the record stays pending, settled by its answer or the loss
             * of the connection send_rest ended (c_send.send_rest). */
            PyObject *et, *ev, *tb;
            PyErr_Fetch(&et, &ev, &tb);
            if (release(ch_rel) < 0) PyErr_Clear();
            if (release(s->io_release) < 0) PyErr_Clear();
            PyErr_Restore(et, ev, tb);
            goto error;
        }
        int e1 = release(ch_rel), e2 = release(s->io_release);
        if (e1 < 0 || e2 < 0) {
            Py_DECREF(x);
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
