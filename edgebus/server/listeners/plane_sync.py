"""The C data plane's sync-back (docs/ARCHITECTURE.md, "The C data plane"): after C calls
appended and answered a link's PRODUCEs, Python's view (partition, segment, statistics,
connection counters, parked fetches) is brought to where its own path would have left it,
before any other Python runs. A part of listeners/shm_plane.py's Plane (`SyncBack`).
"""

from __future__ import annotations

from typing import Any


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
            if c.idx_n:  # the sparse index entries the call noted (note_batch's, in order)
                _write_index_entries(g, c)
            if n == 1:
                seg._recent_rels.append(c.rel[0])
                seg._recent_pos.append(c.pos[0])
            else:
                seg._recent_rels.extend(self._ffi.unpack(c.rel, n))
                seg._recent_pos.extend(self._ffi.unpack(c.pos, n))
            p._gen = gen = p._gen + n  # one generation per batch, as `append` counts
            seg.last_write_gen = gen
            p._unsynced[seg.base_offset] = seg
            end = c.log_end
            p.log_end_offset = end
            p._max_append_time = c.max_append_time
            base = seg.base_offset + c.rel[n - 1]  # the last batch's stamp
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
            c.recent_room -= n
            c.n = 0
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
                stats.batches_out += k
                stats.records_out += records
                t = stats.topic_out.get(g.topic)
                if t is None:
                    t = stats.topic_out[g.topic] = [0, 0]
                t[0] += records
                t[1] += nbytes
                w.request.partitions[0].offset = c.w_offset  # re-armed in place, as push does
                c.w_answers = 0
                c.w_records = c.w_bytes = 0
                if c.w_offset == end:  # it was the only waiter and took every batch
                    data.dirty = True
                    continue
            if data.append_listeners or (g.topic, p.partition) in data.waiters.by_partition:
                # as produce_fields: with the one batch appended, else let them read the log
                if n == 1 and batch is not None:
                    data.on_append(p, batch, base, atime)
                else:
                    data.on_append(p)
            else:
                data.dirty = True


def _write_index_entries(g: Any, c: Any) -> None:
    """Write the index entries the C call noted (plane.c idx_*) to the segment's index files,
    as Segment.note_batch would have after each of those batches; a failed one is skipped with
    the warning partition_append's path gives, and the next batch is due an entry again."""
    p, seg = g.p, g.seg
    for i in range(c.idx_n):
        rel = c.idx_rel[i]
        err = seg.write_index_entry(rel, c.idx_pos[i], c.idx_time[i])
        if err is not None:
            p._log.warning("%s: index entry for offset %d skipped: %s", p.name,
                           seg.base_offset + rel, err)
            seg.bytes_since_index = c.bytes_since_index = max(c.bytes_since_index,
                                                             c.index_interval)
    c.idx_n = 0
