"""In-process pieces of running as a service: the notifier, journald logging, the test hook's
default, config values of the disk and metrics sections, and record counting for metrics."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
from types import SimpleNamespace

import pytest

from edgebus import batch as B
from edgebus.config import config_from_mapping
from edgebus.errors import ConfigError
from edgebus.opsconfig import Threshold, parse_listen
from edgebus.server import testhooks
from edgebus.server.logsetup import JournalFormatter, setup_logging, stream_is_journal
from edgebus.server.notify import Notifier
from edgebus.server.stats import Stats, count_batches

pytestmark = pytest.mark.unit


# --- notifier ------------------------------------------------------------------------------------

def test_without_notify_socket_nothing_is_sent_and_the_loop_need_not_wake():
    n = Notifier(environ={"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and not n.watchdog and n.interval >= 3600
    n.ready("x")
    n.status("x")
    n.stopping()
    n.tick(None)  # never touches the broker when disabled
    assert n.sent == 0


def test_watchdog_interval_is_half_the_period_and_only_for_this_pid(notify_socket):
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "3000000"}
    n = Notifier(environ=env)
    assert n.watchdog and n.interval == 1.5 and n.watchdog_s == 3.0
    other = Notifier(environ={**env, "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.enabled and not other.watchdog
    mine = Notifier(environ={**env, "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog


def test_status_is_one_line(notify_socket, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.path)  # sdnotify reads os.environ
    n = Notifier()
    n.status("two\nlines")
    notify_socket.wait_for("STATUS=two lines", timeout=5)


# --- logging -------------------------------------------------------------------------------------

def test_journal_lines_carry_their_priority_on_every_line():
    f = JournalFormatter()
    rec = logging.LogRecord("edgebus.x", logging.WARNING, __file__, 1, "disk low\nsecond", (), None)
    assert f.format(rec) == "<4>WARNING edgebus.x: disk low\n<4>second"
    rec = logging.LogRecord("edgebus.x", logging.ERROR, __file__, 1, "boom", (), None)
    assert f.format(rec).startswith("<3>ERROR")


def test_journal_is_detected_from_journal_stream(monkeypatch):
    a, b = socket.socketpair()
    with a, b, os.fdopen(os.dup(a.fileno()), "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stream_is_journal(stream)
        monkeypatch.setenv("JOURNAL_STREAM", "1:2")
        assert not stream_is_journal(stream)
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not stream_is_journal(stream)


def test_plain_logs_have_timestamps_and_no_colour(monkeypatch):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        assert setup_logging("warning", stream=out) is False
        logging.getLogger("edgebus.t").info("hidden")
        logging.getLogger("edgebus.t").warning("shown")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    text = out.getvalue()
    assert "hidden" not in text and "WARNING edgebus.t: shown" in text
    assert text[:4].isdigit() and "\x1b[" not in text


# --- test hooks ----------------------------------------------------------------------------------

def test_test_hooks_are_off_unless_asked_for():
    before = signal.getsignal(signal.SIGUSR2)
    assert testhooks.install({}) is False
    assert testhooks.install({"EDGEBUS_TEST_HOOKS": "0"}) is False
    assert signal.getsignal(signal.SIGUSR2) == before


# --- config --------------------------------------------------------------------------------------

def test_disk_and_metrics_sections():
    c = config_from_mapping({"disk": {"low_watermark": "256MiB", "high_watermark": "2.5%",
                                      "check_interval_ms": "10s"},
                             "metrics": {"listen": "localhost:9464"}})
    assert c.disk.low_watermark == Threshold(bytes=256 * 1024 * 1024)
    assert c.disk.high_watermark.resolve(1000) == 25
    assert c.disk.check_interval_ms == 10_000
    assert c.metrics.listen == "localhost:9464"
    assert config_from_mapping({}).metrics.listen is None
    assert str(config_from_mapping({}).disk.low_watermark) == "5%"


@pytest.mark.parametrize(("data", "key"), [
    ({"disk": {"low_watermark": "120%"}}, "disk.low_watermark"),
    ({"disk": {"low_watermark": -5}}, "disk.low_watermark"),
    ({"disk": {"low_watermark": "5 percent"}}, "disk.low_watermark"),
    ({"disk": {"low_watermark": "1GiB", "high_watermark": "512MiB"}}, "disk.high_watermark"),
    ({"disk": {"check_interval_ms": 10}}, "disk.check_interval_ms"),
    ({"metrics": {"listen": "0.0.0.0:9464"}}, "metrics.listen"),
    ({"metrics": {"listen": "9464"}}, "metrics.listen"),
    ({"metrics": {"listen": "127.0.0.1:70000"}}, "metrics.listen"),
    ({"metrics": {"port": 1}}, "metrics.port"),
    ({"topic_defaults": {"on_disk_full": "panic"}}, "topic_defaults.on_disk_full"),
])
def test_bad_values_name_their_key(data, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        config_from_mapping(data)


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:9464", "127.0.0.1:9464"), ("[::1]:9464", "[::1]:9464"),
    ("127.0.0.2:1", "127.0.0.2:1"), ("", None), (None, None),
])
def test_listen_addresses(text, want):
    assert parse_listen(text) == want


# --- counting what consumers get -----------------------------------------------------------------

def test_records_out_are_counted_from_batch_headers():
    one = B.build_batch([B.encode_record(0, None, b"a", [])] * 3, 0, 0)
    two = B.build_batch([B.encode_record(0, b"k", b"bb", [])] * 5, 0, 0)
    assert count_batches(one + two) == (2, 8)
    assert count_batches(b"") == (0, 0)
    assert count_batches(b"\0" * 100) == (0, 0)  # garbage never loops
    s = Stats()
    resp = SimpleNamespace(partitions=[SimpleNamespace(topic="t", records=one + two),
                                       SimpleNamespace(topic="u", records=b"")])
    s.fetch_sent(resp)
    assert (s.records_out, s.batches_out, s.bytes_out) == (8, 2, len(one) + len(two))
    assert s.topic_out == {"t": [8, len(one) + len(two)]}  # per topic, empty ones left out


def test_fsync_histogram_from_the_committer_counters():
    s = Stats()
    c = SimpleNamespace(syncs=0, sync_seconds=0.0)
    s.after_drain(c)
    c.syncs, c.sync_seconds = 1, 0.003
    s.after_drain(c)
    c.syncs, c.sync_seconds = 2, 0.003 + 2.0
    s.after_drain(c)
    cum = dict(s.fsync_cumulative())
    assert s.fsync_count == 2 and cum["0.005"] == 1 and cum["2.5"] == 2 and cum["+Inf"] == 2
