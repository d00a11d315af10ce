"""The partition answers questions about its segments (bases, the oldest one) from its own
state, so the disk guard and the offsets cleaner need not build file names or scan directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from logtest_helpers import append, log_files, open_partition, values_of

from edgebus.log import TopicConfig
from edgebus.log.segment import parse_log_name

pytestmark = pytest.mark.unit


def test_segment_bases_match_the_files_oldest_first(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=300))
    for i in range(12):
        append(p, values_of(3, 20, start=3 * i))
    files = [parse_log_name(f.name) for f in log_files(tmp_path / "t-0")]
    assert len(files) > 2
    assert p.segment_bases == files
    assert p.segment_bases[0] == p.log_start_offset
    p.segment_bases.append(99)  # a copy: the caller cannot change the partition
    assert p.segment_bases == files
    p.close()


def test_oldest_segment_names_the_file_and_its_size(tmp_path: Path) -> None:
    p = open_partition(tmp_path / "t-0", TopicConfig(segment_bytes=300))
    append(p, values_of(3, 20))
    assert p.oldest_segment() is None  # only the active segment: nothing may be dropped
    for i in range(1, 8):
        append(p, values_of(3, 20, start=3 * i))
    oldest = p.oldest_segment()
    assert oldest is not None
    first = log_files(tmp_path / "t-0")[0]
    assert (oldest.base_offset, oldest.name, oldest.size) == (0, first.name, first.stat().st_size)
    assert oldest.mtime == first.stat().st_mtime
    assert p.delete_oldest_segment()
    after = p.oldest_segment()
    assert after is not None and after.base_offset == p.log_start_offset > 0
    p.close()
