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
 *
 * The files (one extension, edgebus._onestep: setup.py ONESTEP; what they share is in the private
 * header onestep.h, with the hot helpers as static inline functions):
 * - onestep.c         this: the module, its functions' table, the interned attribute names and
 *                     the test switch `_fail_allocation`;
 * - onestep_sender.c  the Sender type: made (Sender_init), collected, freed;
 * - onestep_send.c    a send (onestep_Sender_vectorcall), the channel's handles (use_channel),
 *                     the hand-over to the Python path;
 * - onestep_acks.c    the acknowledgements taken in bulk: configure, deliver and its walk;
 * - onestep_settle.c  the settling of the one-step sends they answered (Producer._one_step_acked
 *                     in C) and the hand-back of those not settled (onestep_restore);
 * - onestep_reap.c    the socket's intake (LazySocketChannel.reap in C: sock_reap).
 */
#include "onestep.h"

/* zlib.crc32: a key's partition (client/types.py partition_for_key); NULL: keyed sends go to
 * the Python path. */
PyObject *zlib_crc32;

/* Attribute names, interned once. */
PyObject *s_fast, *s_value_ser, *s_key_ser, *s_txn, *s_channel, *s_closed, *s_ready,
    *s_in_flight, *s_queued, *s_wake_at, *s_lost, *s_fds_closed, *s_timed, *s_send_gap,
    *s_last_send, *s_sent_n, *s_read_mark, *s_size, *s_first_ts, *s_deadline, *s_reap,
    *s_buffer_memory, *s_max_in_flight;

PyObject *s_pending, *s_lock, *s_owner, *s_done, *s_base, *s_timestamp, *s_event,
    *s_callbacks, *s_mutex, *s_results_lock, *s_sent_d, *s_counts, *s_drain_held, *s_blocked,
    *s_flushing, *s_open, *s_cond, *s_one_step_acked, *s_rec_total,
    *s_batch_total, *s_notify_all, *s_acquire, *s_release, *s_locked, *s_empty, *s_dict;

PyObject *s_lazy_wait, *s_reaped_at, *s_reap_lock, *s_deferred, *s_closed_ch, *s_proto,
    *s_frames, *s_fbuf, *s_fpos, *s_sock, *s_fileno, *s_take_data, *s_reaped, *s_nudge;

/* Tests only (tests/client/test_send_cext.py): _onestep._fail_allocation(k) makes the k-th
 * allocation checked here from then on fail with MemoryError, once (NOMEM marks the checks: the
 * allocations of a send and of the acknowledgements' intake). -1: none; a compare when off. */
long fault_at = -1, fault_hits;

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
