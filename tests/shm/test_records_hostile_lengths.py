"""The C record decoder against the Python one (the specification) on batches with valid CRCs
but lying lengths. Moved from tests/review/test_review_hotpaths.py.
"""

from __future__ import annotations

import struct

from edgebus import batch as B


def _fix_crc(b: bytearray) -> bytes:
    import zlib
    struct.pack_into("<I", b, 8, len(b))
    struct.pack_into("<I", b, 20, zlib.crc32(b[24:]))
    return bytes(b)


def test_sound_c_record_decode_matches_python_on_hostile_lengths():
    """eb_plan_records / eb_format_records never accept what the Python decoder rejects, and give
    the same records otherwise, for batches with valid CRCs but lying record/key/value/header
    lengths (including 0x7fffffff and -2), with skips and multi-chunk batches."""
    import random

    from edgebus.errors import CorruptRecordError
    rng = random.Random(7)
    saved = B._fast

    def both(b, mo):
        res = []
        for fast in (saved, None):
            B._fast = fast
            try:
                res.append(("ok", B.decode_batch(b, "t", 0, mo)))
            except CorruptRecordError as e:
                res.append(("err", str(e)))
            finally:
                B._fast = saved
        return res

    # Records drawn from a pool encoded once: a record's bytes do not depend on its place in the
    # batch, and 256 draws cover every shape (key none or 0-3 bytes, value none or 0-5, a header
    # or not). Encoding each record afresh was half of this test's time (45 s under load 18).
    pool = [B.encode_record(rng.randrange(1 << 40), None if rng.random() < .5 else b"k" * rng.randrange(4),
                            None if rng.random() < .2 else b"v" * rng.randrange(6),
                            [] if rng.random() < .7 else [("h", b"x")]) for _ in range(256)]
    for _ in range(3000):
        n = rng.choice([4, 5, 9, 1030])
        recs = [rng.choice(pool) for _ in range(n)]
        b = bytearray(B.build_batch(recs, 0, 0))
        off = 64 + rng.randrange(len(b) - 64 - 4)
        struct.pack_into("<i", b, off, rng.choice([0x7FFFFFFF, -2, -1, 0, 1, 70000, rng.randrange(-5, 50)]))
        b = _fix_crc(b)
        fast, slow = both(b, rng.choice([0, 1, n - 4]))
        assert fast == slow
