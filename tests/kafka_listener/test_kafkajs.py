"""kafkajs (npm, under Debian's Node.js) produces to the Kafka listener (idempotent, gzip,
acks=-1); the native consumer reads the records."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edgebus import Consumer, TopicPartition
from edgebus.testing import EmbeddedBroker
from tests.kafka_listener.conftest import create_topic

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
# kafkajs is installed once per machine here (npm's own cache makes a re-install cheap).
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgebus-tests" / "kafkajs"


@pytest.fixture(scope="session")
def kafkajs() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js and npm are not installed (apt-get install nodejs npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    # One install at a time: pytest-xdist workers (and other checkouts' runs) share the cache,
    # and two npm installs into one prefix can leave a half-written node_modules.
    with open(CACHE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (CACHE / "node_modules" / "kafkajs").is_dir():
            r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), "kafkajs@2"],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                pytest.skip(f"cannot install kafkajs with npm: {r.stderr.strip()[-300:]}")
    return CACHE / "node_modules"


def test_kafkajs_produce(kbroker: EmbeddedBroker, kafkajs: Path) -> None:
    create_topic(kbroker, "js")
    r = subprocess.run(["node", str(HERE / "kafkajs_produce.js"), kbroker.kafka_bootstrap, "js", "50"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "NODE_PATH": str(kafkajs)})
    assert r.returncode == 0, r.stderr
    (result,) = json.loads(r.stdout)
    assert (result["topicName"], result["partition"], result["errorCode"], result["baseOffset"]) == ("js", 0, 0, "0")
    with Consumer(socket=kbroker.socket, auto_offset_reset="earliest", enable_auto_commit=False) as c:
        c.assign([TopicPartition("js", 0)])
        got = []
        while len(got) < 50:
            for recs in c.poll(2000).values():
                got.extend(recs)
    assert [(r.key, r.value, list(r.headers)) for r in got] == [
        (b"k%d" % i, b"from kafkajs %d" % i, [("src", b"js")]) for i in range(50)]
