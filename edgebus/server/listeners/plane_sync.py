"""The C data plane's sync-back (docs/ARCHITECTURE.md, "The C data plane"): after C calls
appended and answered a link's PRODUCEs, Python's view (partition, segment, statistics,
connection counters, parked fetches) is brought to where its own path would have left it,
before any other Python runs. A part of listeners/shm_plane.py's Plane (`SyncBack`).
"""

from __future__ import annotations

from typing import Any

from edgebus.log.segment import RECENT_BATCHES

_RECENT_MAX = 2 * RECENT_BATCHES  # the segment's recent lists, at most (Segment.note_batch)
_RING = _RECENT_MAX  # plane.c EB_PLANE_RECENT: the batches' places C keeps (load() checks)


def _recent(rels: Any, poss: Any, c: Any, n: int, ffi: Any) -> None:
    """The segment's recent lists after `n` batches C appended, as note_batch's trimming leaves
    them (before each append, a full list loses its first half): the old lists and the batches
    in order, cut by RECENT_BATCHES at a time from the front until at most _RECENT_MAX are left.
    C keeps only the last _RING batches' places, all that can be left when n is larger."""
    total = len(rels) + n
    drop = 0 if total <= _RECENT_MAX else -(-(total - _RECENT_MAX) // RECENT_BATCHES) * RECENT_BATCHES
    if n <= _RING:
        rels.extend(ffi.unpack(c.rel, n))
        poss.extend(ffi.unpack(c.pos, n))
        if drop:
            del rels[:drop]
            del poss[:drop]
        return
    keep = total - drop  # (<= _RECENT_MAX <= n: all of them C's, the old lists gone)
    rels.clear()
    poss.clear()
    for k in range(n - keep, n):
        rels.append(c.rel[k % _RING])
        poss.append(c.pos[k % _RING])


def _index_entries(g: Any, seg: Any, c: Any, ffi: Any) -> None:
    """The index entries C noted as due (plane.c: at the batch that found bytes_since_index at
    the interval), written in order as note_batch would have written each: the same bytes, in
    one write per file (`IndexFile.append_many`; a sync-back after a long parked wait may carry
    dozens, and two writes each kept the loop from the next frames: tail28), or, should that
    fail, one entry at a time as note_batch writes them. A failed write is
    logged as the partition's append logs it and the entry skipped (the index is sparse, and
    entries must stay in order: a later one may be written already); when the last of them
    failed, an entry stays due, as note_batch leaves it after a failed write, so the next batch
    appended (in C or by Python's path) tries again (tests/service/test_c_plane_index_retry.py).
    Before tail28 the next try came only after another interval's bytes."""
    n = c.ix_n
    if n > 1:
        ix, tix = seg.index, seg.timeindex
        rels = ffi.unpack(c.ix_rel, n)
        try:
            ix.append_many(rels, ffi.unpack(c.ix_pos, n))
            try:
                tix.append_many(ffi.unpack(c.ix_time, n), rels)
            except OSError:
                ix.keep(len(ix) - n)  # the pair kept consistent, as index_entry keeps it
                raise
        except OSError:
            pass  # one at a time below: each entry written or skipped as before
        else:
            c.ix_n = 0
            return
    failed = False
    for i in range(n):
        err = seg.index_entry(c.ix_rel[i], c.ix_pos[i], c.ix_time[i])
        failed = err is not None
        if failed:
            g.p._log.warning("%s: index entry for offset %d skipped: %s", g.p.name,
                             seg.base_offset + c.ix_rel[i], err)
    c.ix_n = 0
    if failed and c.bytes_since_index < c.index_interval:
        # (the grant's copy too: the sync-back leaves the grant current, nothing refreshes it)
        seg.bytes_since_index = c.bytes_since_index = c.index_interval


class SyncBack:
    """Plane's sync-back (`_sync` after a call of its own, `sync` after the parked wait's)."""

    _ffi: Any
    disk: Any
    data: Any
    frames: int
    standing_answers: int

    def _sync(self, link: Any, call: Any) -> None:
        self.disk._budget = call.budget
        if call.rest_len:
            # Standing answers a consumer's socket took only part of (sockplane.c): their rest
            # is queued before anything sync's on_append calls may queue on that connection.
            from edgebus.server.listeners.sock_plane import queue_rest  # (rare: at its first)

            for g in link.grants.values():
                if g.c.w_rest_len:
                    queue_rest(g, call)
            call.rest_len = 0
        self.sync(link, call.frames, call.answers)

    def sync(self, link: Any, frames: int, answers: int) -> None:
        """Bring Python's view to where its own path would have left it (partition_append.py
        `append`, Segment.append_batch, DataHandlers.produce_fields, Dispatcher.dispatch_frame),
        after C calls that took `frames` PRODUCEs from the link and wrote `answers` answers."""
        self.frames += frames
        conn = link.conn
        conn.requests += frames
        conn.answers += answers  # (Connection.queue's count)
        link.frames_in += frames
        link.frames_out += answers
        data = self.data
        stats = data.stats
        for g in link.grants.values():
            c = g.c
            n = c.n
            if not n:
                continue
            p, seg = g.p, g.seg
            seg.size = c.seg_size
            seg.max_append_time = c.max_append_time
            seg.bytes_since_index = c.bytes_since_index
            rels, poss = seg._recent_rels, seg._recent_pos
            if n == 1 and len(rels) < _RECENT_MAX:
                rels.append(c.rel[0])
                poss.append(c.pos[0])
            else:
                _recent(rels, poss, c, n, self._ffi)
            if c.ix_n:
                _index_entries(g, seg, c, self._ffi)
            p._gen = gen = p._gen + n  # one generation per batch, as `append` counts
            seg.last_write_gen = gen
            p._unsynced[seg.base_offset] = seg
            end = c.log_end
            p.log_end_offset = end
            p._max_append_time = c.max_append_time
            base = seg.base_offset + c.rel[(n - 1) % _RING]  # the last batch's stamp
            atime = c.max_append_time
            ln = c.tail_len  # (a copy: the read buffer may hold the next frame by now)
            batch = self._ffi.unpack(c.tail, ln) if ln >= 0 else None
            p._tail = (base, end, batch) if batch is not None else None
            records, nbytes = c.records, c.bytes
            stats.records_in += records
            stats.bytes_in += nbytes
            t = stats.topic_in.get(g.topic)
            if t is None:
                t = stats.topic_in[g.topic] = [0, 0]
            t[0] += records
            t[1] += nbytes
            g.gen = gen
            c.n = 0
            # A hold in C still on (sockplane.c) ends here: its fetch stays at the held offset
            # and on_append below holds it as Python's, as it did before C held any.
            c.w_hold = c.w_listed = 0
            c.records = c.bytes = 0
            k = c.w_answers
            if k:  # the standing fetch answered in C: push's bookkeeping (handlers/standing.py)
                w = g.w
                wl = w.conn.shm
                if wl is not None:  # (a socket consumer's has neither)
                    wl.frames_out += k
                    # the window of handlers/standing.py caught_up, as ShmLink.queue sets it
                    wl.last_entry = (c.w_last + 7) & ~7
                w.conn.answers += k
                data.standing.armed += k
                self.standing_answers += k
                nbytes, records = c.w_bytes, c.w_records
                stats.bytes_out += nbytes
                stats.batches_out += c.w_batches  # (a held answer carries several)
                stats.records_out += records
                t = stats.topic_out.get(g.topic)
                if t is None:
                    t = stats.topic_out[g.topic] = [0, 0]
                t[0] += records
                t[1] += nbytes
                w.request.partitions[0].offset = c.w_offset  # re-armed in place, as push does
                c.w_answers = c.w_batches = 0
                c.w_records = c.w_bytes = 0
                if c.w_offset == end:  # it was the only waiter and took every batch
                    data.dirty = True
                    continue
            key = (g.topic, p.partition)
            if key in data.waiters.by_partition or (data.append_listeners and data.listened(key)):
                # as produce_fields: with the one batch appended, else let them read the log
                if n == 1 and batch is not None:
                    data.on_append(p, batch, base, atime)
                else:
                    data.on_append(p)
            else:
                data.dirty = True
