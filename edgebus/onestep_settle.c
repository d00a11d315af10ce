/* edgebus._onestep: the settling of one-step sends whose answers the walk took
 * (onestep_acks.c deliver, onestep_reap.c sock_reap): Producer._one_step_acked in C. */
#include "onestep.h"

/* Put acked[0..n) back into pending (their answers were taken but could not be settled): the
 * caller's error ends the channel (the reader's, or a reap's _deferred), whose loss gives each
 * an outcome; one already settled is skipped there (_finish). Best effort: the keys are the
 * walk's own, so only a dict that must grow allocates. */
void onestep_restore(PyObject *pending, acked_t *acked, Py_ssize_t n) {
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    for (Py_ssize_t j = 0; j < n; j++)
        if (PyDict_SetItem(pending, acked[j].key, acked[j].b) < 0) PyErr_Clear();
    PyErr_Restore(et, ev, tb);
}

void onestep_release_acked(acked_t *acked, Py_ssize_t n) {
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_DECREF(acked[j].b);
        Py_DECREF(acked[j].key);
    }
}

/* The counts moved by what was settled, from their values now (-1 and an exception on a
 * failure): a callback run meanwhile may have sent, re-entering the producer's mutex (an RLock),
 * and counted its own record, so values read before it are stale. */
static int count_settled(PyObject *od, PyObject *owner, PyObject *counts, long long settled,
                         long long bytes) {
    long long v;
    if (attr_long(od, owner, s_in_flight, &v) < 0 || set_long(od, owner, s_in_flight, v - settled) < 0 ||
        attr_long(od, owner, s_queued, &v) < 0 || set_long(od, owner, s_queued, v - bytes) < 0)
        return -1;
    PyObject *names[2] = {s_rec_total, s_batch_total};
    for (int k = 0; k < 2; k++) {
        PyObject *c = PyDict_GetItemWithError(counts, names[k]); /* borrowed */
        if (c == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "the producer's send counts");
            return -1;
        }
        if ((v = PyLong_AsLongLong(c)) == -1 && PyErr_Occurred()) return -1;
        PyObject *x = PyLong_FromLongLong(v + settled);
        if (x == NULL) return -1;
        int r = PyDict_SetItem(counts, names[k], x);
        Py_DECREF(x);
        if (r < 0) return -1;
    }
    return 0;
}

/* Settle acked[0..n) (Producer._one_step_acked, in C); consumes the references. On an error
 * (-1) the ones not settled are back in pending (restore). Every object the changes need is
 * made first (pass 1, which changes nothing), so that a failed allocation leaves nothing half
 * done: the stores of pass 2 go into existing attributes and keys. */
int onestep_settle(PyObject *pending, acked_t *acked, Py_ssize_t n) {
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
        /* Called, it settled and counted every record before raising (a callback's
         * BaseException): none goes back to pending, which would count them again. */
        restored = 1;
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
    int bad = 0, locked = 0, called = 0; /* called: a callback ran (Python code, any) */
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
        called = 1;
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
    /* The counts for the records settled: all of them, with no callback run, the values made
     * in pass 1 (nothing can fail); else moved from their values now (count_settled). */
    if (settled == taken && !called) {
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
    } else if (settled > 0) {
        /* A callback ran, or pass 2 broke off (rare: then best effort, its error kept) */
        PyObject *et, *ev2, *tb;
        PyErr_Fetch(&et, &ev2, &tb);
        int cbad = count_settled(od, owner, counts, settled, settled_bytes - settled * g_header) < 0;
        if (cbad && (et != NULL || settled != taken)) {
            PyErr_Clear();
            cbad = 0;
        }
        if (et != NULL) PyErr_Restore(et, ev2, tb);
        bad = bad || cbad;
    }
    /* Those not settled go back to pending (the caller's error ends the channel). */
    if (bad) {
        onestep_restore(pending, acked + i, n - i);
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
    if (rc < 0 && !restored) onestep_restore(pending, acked, n);
    for (Py_ssize_t j = 0; j < made; j++) {
        Py_XDECREF(run[j].id);
        Py_XDECREF(run[j].base);
        Py_XDECREF(run[j].ts);
        Py_XDECREF(run[j].ev);
        Py_XDECREF(run[j].cbs);
    }
    onestep_release_acked(acked, n);
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
