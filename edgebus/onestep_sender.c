/* edgebus._onestep: the Sender type, made once per producer by edgebus/client/c_send.py (its
 * send is onestep_send.c; edgebus/onestep.c says which file holds what). */
#include "onestep.h"

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
        s->vectorcall = onestep_Sender_vectorcall;
    }
    return (PyObject *)s;
}

static PyMethodDef Sender_methods[] = {
    {"counts", (PyCFunction)Sender_counts, METH_NOARGS,
     "(sends made in C, sends handed to the Python path)"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject SenderType = {
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
