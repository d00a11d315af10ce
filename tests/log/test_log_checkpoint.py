"""The recovery checkpoint file: exact format, and torn or edited files are rejected."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

import pytest

from edgebus.log import RecoveryPoint
from edgebus.log.checkpoint import (
    CHECKPOINT_FILE,
    decode_checkpoint,
    encode_checkpoint,
    read_checkpoint,
    write_checkpoint,
)

pytestmark = pytest.mark.unit

POINTS = {
    ("orders", 0): RecoveryPoint(100, 4096, 150, 0, 1_700_000_000_000),
    ("a-1", 3): RecoveryPoint(0, 0, 0, 0, -1),
}


def test_exact_bytes() -> None:
    data = encode_checkpoint(POINTS)
    body = (b"edgebus-recovery-checkpoint 1\n2\n"
            b"a-1 3 0 0 0 0 -1\n"
            b"orders 0 0 100 4096 150 1700000000000\n")
    assert data == body + b"crc32 %08x\n" % zlib.crc32(body)
    assert decode_checkpoint(data) == POINTS


def test_every_truncation_and_flip_is_rejected() -> None:
    data = encode_checkpoint(POINTS)
    for n in range(len(data)):
        with pytest.raises(ValueError):
            decode_checkpoint(data[:n])
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises((ValueError, UnicodeDecodeError)):
            decode_checkpoint(bytes(bad))


def test_empty_checkpoint() -> None:
    assert decode_checkpoint(encode_checkpoint({})) == {}


def test_read_missing_torn_and_good(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("edgebus.log")
    assert read_checkpoint(tmp_path, log) == {}
    write_checkpoint(tmp_path, encode_checkpoint(POINTS))
    assert read_checkpoint(tmp_path, log) == POINTS
    assert not (tmp_path / (CHECKPOINT_FILE + ".tmp")).exists()
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"edgebus-recovery-checkpoint 1\n1\norders 0")
    with caplog.at_level(logging.WARNING):
        assert read_checkpoint(tmp_path, log) == {}
    assert "every partition will be scanned" in caplog.text
