"""A grant of the C data plane (docs/ARCHITECTURE.md, "The C data plane"): one partition a link's
PRODUCEs may be appended to in C, the copy of the partition's append state the C call works on
(`Grant.refresh`, `current`), and what a failed write(2) in C leaves Python to decide
(`write_failed`). The plane that makes and checks grants is listeners/shm_plane.py.
"""

from __future__ import annotations

from typing import Any


def write_failed(link: Any) -> None:
    """A call stopped at a failed write(2) (cut back in C): the partition's write_failed
    decides, as Python's own path does (offline unless the disk is full), before Python's path
    takes the frame again. A retry that succeeds must not hide an EIO (a failing card)."""
    for g in link.grants.values():
        c = g.c
        if c.cut_failed:
            g.p._go_offline(f"cannot cut a failed append back in {g.seg.log_path} (C data plane)",
                            c.write_errno or None)
        elif c.write_errno and c.fd >= 0:  # (fd -1: no writable fd, Python's path opens one)
            g.p.write_failed(c.write_errno)
        c.write_errno = 0


class Grant:
    """One partition a link's PRODUCEs may be appended to in C; `c` is the C struct."""

    __slots__ = ("c", "cfg", "gen", "hbuf", "p", "seg", "start", "topic", "w", "w_checked")

    def __init__(self, p: Any, ffi: Any) -> None:
        self.c = ffi.new("eb_grant *")
        self.p = p
        self.topic = p.topic
        tb = p.topic.encode()
        self.c.topic_len = len(tb)
        ffi.memmove(self.c.topic, tb, len(tb))
        self.c.partition = p.partition
        self.seg: Any = None
        self.cfg: Any = None
        self.w: Any = None  # the standing fetch armed in c.w_* (a ParkedFetch), if any
        self.w_checked: Any = None  # (that fetch, ACL generation) its access check passed at
        self.c.w_sock = -1  # (fd 0 is a descriptor: "none" must be said)
        # C's own hold of a socket consumer's fetch keeps its batches here (sockplane.c), made
        # at the first socket consumer armed on this grant (shm_plane._watch)
        self.hbuf: Any = None
        self.gen = self.start = -1

    def refresh(self) -> None:
        """Copy the partition's state into the C struct (after anything but the C call moved it)."""
        p, c = self.p, self.c
        seg = p._segments[-1]
        cfg = p.config
        self.seg, self.cfg, self.gen, self.start = seg, cfg, p._gen, p.log_start_offset
        c.log_end = p.log_end_offset
        c.max_append_time = p._max_append_time
        c.seg_base = seg.base_offset
        c.seg_size = seg.size
        c.first_append_time = -1 if seg.first_append_time is None else seg.first_append_time
        c.bytes_since_index = seg.bytes_since_index
        c.segment_bytes = cfg.segment_bytes
        c.segment_ms = cfg.segment_ms
        c.max_message_bytes = cfg.max_message_bytes
        c.index_interval = cfg.index_interval_bytes
        c.log_start = p.log_start_offset
        # -1: no writable fd, so the C call's write fails and Python's path decides
        c.fd = seg.fd if seg.fd is not None and seg.writable else -1
        # the sync-back writes the index entries C notes (Segment.index_entry): only with the
        # segment's index writers open (else C declines an entry due, and Python's path opens them)
        ix, tix = seg.index, seg.timeindex
        c.index_ok = ix is not None and ix.fd is not None and tix is not None and tix.fd is not None
        c.n = c.ix_n = c.cut_failed = c.write_errno = 0
        c.records = c.bytes = 0

    def current(self) -> bool:
        """Whether nothing but the C call changed the partition since `refresh`."""
        p = self.p
        return (p._gen == self.gen and p.config is self.cfg and p.log_start_offset == self.start
                and p._segments[-1] is self.seg)
