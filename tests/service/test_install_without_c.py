"""`pip install` on a board without a C compiler: the install succeeds without the C modules,
the supervisor and the clients run on the Python code, the client says once that it uses the
socket, and records go through unchanged (setup.py's OptionalBuildExt).

The install is real: pip builds a wheel from a copy of the tracked sources with CC=/bin/false
(the compiler "exists" and fails, as a missing one does), into a directory that a fresh venv
sees. Its dependencies come from the test venv, without its editable finder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CLIENT = textwrap.dedent("""
    import json, sys
    import edgebus, edgebus.batch, edgebus.shm
    from edgebus import Admin, Consumer, Producer, TopicPartition
    from edgebus.errors import TransportUnavailableError
    from edgebus.testing import EmbeddedBroker

    out = {"file": edgebus.__file__, "shm": edgebus.shm.unavailable_reason(),
           "fast": edgebus.batch._fast is not None}
    b = EmbeddedBroker(sys.argv[1]).start()
    try:
        with Admin(socket=b.socket) as a:
            a.create_topic("teapot", 2)
            st = a.status()
            # the supervisor's C data plane (shm and socket halves) off: no edgebus.shm._plane
            out["planes"] = [st["shm_plane"]["enabled"], st["socket_plane"]["enabled"]]
        sent = [(f"kettle-{i % 3}".encode(), f"{20 + i}".encode()) for i in range(200)]
        for _ in range(2):  # two producers: the fallback is said once per process, not per client
            with Producer(socket=b.socket, acks="durable") as p:
                for k, v in sent:
                    p.send("teapot", v, key=k)
                p.flush()
        got = []
        with Consumer(socket=b.socket, auto_offset_reset="earliest") as c:
            c.assign([TopicPartition("teapot", 0), TopicPartition("teapot", 1)])
            while len(got) < 400:
                batch = c.poll(timeout_ms=2000)
                if not batch:
                    break
                got += [(r.key.decode(), r.value.decode()) for recs in batch.values() for r in recs]
        out["got"] = sorted(got)
        out["want"] = sorted((k.decode(), v.decode()) for k, v in sent * 2)
        try:
            with Producer(socket=b.socket, transport="shm") as p:  # connects at the first send
                p.send("teapot", b"x").get(timeout=30)  # fails at once, not after a timeout
            out["shm_error"] = None
        except TransportUnavailableError as e:
            out["shm_error"] = str(e)
        out["supervisor_log"] = b.log()
    finally:
        b.stop()
    print(json.dumps(out))
""")


def _install_without_compiler(tmp: Path) -> Path:
    src, site = tmp / "src", tmp / "site"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        if f.startswith("bench/results/") or not (ROOT / f).is_file():
            continue
        dst = src / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((ROOT / f).read_bytes())
    env = {**os.environ, "CC": "/bin/false", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.pop("EDGEBUS_REQUIRE_C", None)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-v", "--no-deps", "--target",
                        str(site), str(src)], env=env, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 and ("NewConnectionError" in r.stdout + r.stderr
                              or "No matching distribution found for setuptools" in r.stdout + r.stderr):
        pytest.skip("pip cannot fetch the build requirements (setuptools, cffi) from the index")
    assert r.returncode == 0, f"pip install without a compiler failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    assert "could not build" in r.stdout + r.stderr, "the install did not say it skipped the C modules"
    return site


def test_install_without_a_compiler_works_on_the_socket_and_says_so_once(tmp_path: Path) -> None:
    site = _install_without_compiler(tmp_path)
    assert not list(site.glob("edgebus/**/*.so")), "a C module was built with CC=/bin/false"
    venv = tmp_path / "venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip",
                    str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # The installed edgebus first; the test venv's packages for its dependencies. A path listed
    # in a .pth is added without running that directory's own .pth files (the editable finder).
    Path(purelib, "edgebus-test.pth").write_text(f"{site}\n{sysconfig.get_paths()['purelib']}\n")
    r = subprocess.run([py, "-c", CLIENT, str(tmp_path / "broker")], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(site)), out["file"]
    assert out["shm"] and "not built" in out["shm"]
    assert out["fast"] is False
    assert out["planes"] == [False, False]
    assert out["got"] == out["want"] and len(out["got"]) == 400
    assert out["shm_error"] and "not built" in out["shm_error"]
    said = [ln for ln in r.stderr.splitlines() if "runs without its C module" in ln]
    assert len(said) == 1, r.stderr[-4000:]
    assert "shared-memory rings are off" in out["supervisor_log"]
