"""A Partition's durability: sync tickets (fsynced on a helper thread, edgebus/log/sync.py), the
synced point they advance, and the recovery point the checkpoint stores.

Invariant: the recovery point only advances after a successful fsync of everything before it, and
never again after a failed one (the partition goes offline instead).

`_Durability` is a mixin of `Partition` (edgebus/log/partition.py); the state it uses is declared
in partition_state.py.
"""

from __future__ import annotations

import os

from edgebus.log.checkpoint import RecoveryPoint
from edgebus.log.fileutil import errno_text, storage_error
from edgebus.log.partition_state import _PartitionState
from edgebus.log.sync import SyncTicket


class _Durability(_PartitionState):
    """Partition's fsyncs and recovery point."""

    def begin_sync(self) -> SyncTicket | None:
        """A ticket fsyncing every change not yet covered by a completed sync, or None if there
        is none. Also None when offline: nothing can become durable any more, so callers must
        check `offline` before acknowledging (a None is not a success then)."""
        self._check_open()
        if self.offline:
            return None
        return self._ticket(all_indexes=False)

    def _ticket(self, all_indexes: bool) -> SyncTicket | None:
        """all_indexes (at close): the active segment's index files too, even if clean."""
        dir_dirty = self._dir_dirty_gen > self._dir_synced_gen
        if not self._unsynced and not dir_dirty and not all_indexes:
            return None
        segs = dict(self._unsynced)
        if all_indexes:
            segs.setdefault(self._active.base_offset, self._active)
        fds: list[int] = []
        try:
            for seg in segs.values():
                # Index files are derived data, checked and rebuilt at recovery: the active
                # segment's are fsynced only at close, a rolled segment's once after its roll.
                fds.extend(seg.dup_fds(all_indexes or seg is not self._active))
            if dir_dirty:
                fds.append(os.dup(self._dir_fd))
        except OSError as e:
            SyncTicket(fds, 0, 0, 0, 0).discard()
            raise storage_error(e, f"preparing an fsync of {self.name}") from e
        active = self._active
        return SyncTicket(
            fds, active.base_offset, active.size, self.log_end_offset, self._gen,
            list(self._unsynced), dir_dirty, self,
        )

    def complete_sync(self, ticket: SyncTicket) -> None:
        """The ticket ran without error: advance the synced point."""
        if ticket.owner is not self:
            raise ValueError("ticket belongs to another partition")
        if self.offline or self._closed:
            return  # never turn anything into success after a failure
        point = (ticket.segment_base, ticket.position)
        # A ticket whose segment retention deleted meanwhile covers nothing that is left.
        if point > self._synced[:2] and ticket.segment_base >= self.log_start_offset:
            self._synced = (ticket.segment_base, ticket.position, ticket.next_offset)
        for base in ticket.segment_bases:
            seg = self._unsynced.get(base)
            if seg is not None and seg.last_write_gen <= ticket.gen:
                del self._unsynced[base]
                if seg is not self._active:
                    seg.close_index_writers()
                    self._touch(seg)
        if ticket.covers_dir:
            self._dir_synced_gen = max(self._dir_synced_gen, ticket.gen)

    def fail_sync(self, ticket: SyncTicket, err: OSError) -> None:
        """The ticket's fsync failed: the partition goes offline (never retried into success)."""
        ticket.discard()
        self._go_offline(f"fsync failed: {errno_text(err.errno)}", err.errno)

    def recovery_point(self) -> RecoveryPoint:
        seg_base, position, next_offset = self._synced
        return RecoveryPoint(seg_base, position, next_offset, self.log_start_offset,
                             self._max_append_time)
