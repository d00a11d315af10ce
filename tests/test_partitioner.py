"""Key -> partition must never change between versions: these values are pinned literals."""

import pytest

from edgebus.client.types import partition_for_key

pytestmark = pytest.mark.unit

# Changing any of these moves users' keys between partitions: it is a breaking change.
PINNED = [
    (b"", 4, 0),
    (b"teapot-1", 4, 1),
    (b"sensor/42", 6, 3),
    (b"k0", 97, 3),
]


@pytest.mark.parametrize(("key", "partitions", "expected"), PINNED)
def test_pinned_values(key: bytes, partitions: int, expected: int) -> None:
    assert partition_for_key(key, partitions) == expected


def test_pinned_sequence() -> None:
    assert [partition_for_key(f"k{i}".encode(), 4) for i in range(8)] == [3, 1, 3, 1, 2, 0, 2, 0]
