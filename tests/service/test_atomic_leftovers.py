"""A crash between an atomic write's temporary file and its rename leaves NAME.tmp in the data
directory; the next start removes every such leftover of the directory's own files."""

from __future__ import annotations

from pathlib import Path

from edgebus.testing import EmbeddedBroker

LEFTOVERS = ("topics.json.tmp", "recovery-checkpoint.tmp", "kafka-leader-epochs.tmp")


def test_a_start_removes_the_temporary_files_a_crash_left(tmp_path: Path) -> None:
    b = EmbeddedBroker(tmp_path / "b").start()
    b.stop()
    for name in LEFTOVERS:
        (b.data_dir / name).write_bytes(b"half a file")
    (b.data_dir / "notes.tmp").write_bytes(b"someone else's")  # not ours: left alone
    b.start()
    try:
        left = sorted(p.name for p in b.data_dir.iterdir() if p.name.endswith(".tmp"))
        assert left == ["notes.tmp"], left
    finally:
        b.cleanup()
