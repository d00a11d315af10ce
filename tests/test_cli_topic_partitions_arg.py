"""`edgebus topics alter T --config partitions=4` (`topics describe` lists partitions among the
settings) explains where the partition count is set instead of "unknown key (did you mean
'retention_ms'?)". (Found by following the README as a user.)"""

from __future__ import annotations

import pytest

from edgebus.cli.main import parse_args

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("cmd", [["topics", "alter", "events"], ["topics", "create", "events"]])
def test_partitions_in_config_says_where_the_count_is_set(
        cmd: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_args([*cmd, "--config", "partitions=4"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "partitions is not a --config setting" in err and "--partitions N" in err, err
    assert "did you mean" not in err
