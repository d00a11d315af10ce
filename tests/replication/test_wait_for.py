"""The replication tests' wait_for: an error from the condition counts as "not yet" (a peer may
be restarting), but a timeout names what it waited for and the last error, so a condition that
can never succeed says why."""

from __future__ import annotations

import pytest

from .conftest import wait_for


def test_a_timeout_names_the_wait_and_the_last_error_from_the_condition() -> None:
    def refused() -> bool:
        raise ConnectionRefusedError(111, "the peer refused")

    with pytest.raises(AssertionError, match="waiting for the mirror; its last try raised "
                       "ConnectionRefusedError") as info:
        wait_for(refused, timeout=0.2, what="the mirror")
    assert isinstance(info.value.__cause__, ConnectionRefusedError)


def test_an_error_then_success_returns() -> None:
    tries = iter([OSError("restarting"), False, True])

    def cond() -> bool:
        t = next(tries)
        if isinstance(t, Exception):
            raise t
        return t

    wait_for(cond, timeout=30, what="the peer back")
