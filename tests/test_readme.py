"""Every code block of README.md runs as shown, in order, as a new user would run them after the
quickstart (issue 14, item 10).

The `sh` blocks run in bash (-e, pipefail) from the repository root, one after the other, each
with the environment the previous one left (so `. .venv/bin/activate` carries on, as in a user's
shell); the `python` blocks run with the `python` that environment finds. Only the location of
the supervisor's data and socket is chosen here (EDGEBUS_DATA_DIR, EDGEBUS_SOCKET in a temporary
directory), so that the test touches nothing of the user's. An HTML comment before a block
(documented in the README's Tests section) changes how it runs:

    <!-- readme-test: skip (why) -->         not run (needs root, or is the test suite itself)
    <!-- readme-test: background (why) -->   runs until stopped: started, it must print a line
                                             (and the supervisor's socket must answer) before
                                             the next block, still run after the last, and is
                                             then stopped (SIGTERM to its process group)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(skip|background)\b(.*?)-->", re.S)
RUN_LANGS = ("sh", "python")
SHOWN_ONLY = ("",)  # output and listings: blocks without a language are not run
BLOCK_TIMEOUT_S = 300  # a block's own work (the quickstart may build .venv)
START_TIMEOUT_S = 180  # a background block's first line and the socket


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    mode: str  # "run", "skip" or "background"


def readme_blocks(text: str) -> list[Block]:
    tokens = MarkdownIt("commonmark").parse(text)
    blocks: list[Block] = []
    for i, tok in enumerate(tokens):
        if tok.type != "fence":
            continue
        mode = "run"
        prev = tokens[i - 1] if i else None
        if prev is not None and prev.type == "html_block" and (m := MARKER.search(prev.content)):
            mode = m.group(1)
        assert tok.map is not None
        blocks.append(Block(tok.info.strip(), tok.content, tok.map[0] + 1, mode))
    return blocks


def test_readme_blocks_are_parsed_with_their_markers():
    blocks = readme_blocks(README.read_text())
    langs = {b.lang for b in blocks}
    assert langs <= {*RUN_LANGS, *SHOWN_ONLY}, (
        f"README has blocks in {sorted(langs - {*RUN_LANGS, *SHOWN_ONLY})}: "
        "tests/test_readme.py runs only sh and python blocks")
    run = [b for b in blocks if b.lang in RUN_LANGS]
    assert run[0].mode == "background" and "quickstart run" in run[0].code
    assert any(b.mode == "background" and b.lang == "python" for b in run)
    assert any(b.mode == "skip" for b in run)
    # The parser sees a marker only right before its block.
    sample = "<!-- readme-test: skip (x) -->\n```sh\nfalse\n```\n\ntext\n\n```sh\ntrue\n```\n"
    assert [(b.code, b.mode) for b in readme_blocks(sample)] == [("false\n", "skip"),
                                                                  ("true\n", "run")]


def _connectable(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


class Session:
    """A user's terminal: the environment carried from block to block, background jobs."""

    def __init__(self, tmp: Path, sock: str) -> None:
        self.tmp = tmp
        self.sock = sock
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("EDGEBUS_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        venv_bin = str(ROOT / ".venv" / "bin")  # not on PATH until the README activates it
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                      if p != venv_bin)
        env["EDGEBUS_DATA_DIR"] = str(tmp / "data")
        env["EDGEBUS_SOCKET"] = sock
        # The Kafka listener on a port nobody else uses (the README's blocks name it through
        # this variable, whose default is the quickstart's 127.0.0.1:9092).
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            env["EDGEBUS_KAFKA_LISTENERS"] = f"127.0.0.1:{s.getsockname()[1]}"
        self.env = env
        self.jobs: list[tuple[Block, subprocess.Popen[bytes], Path]] = []
        self.count = 0

    def _command(self, block: Block) -> list[str]:
        self.count += 1
        if block.lang == "sh":
            script = self.tmp / f"block{self.count}.sh"
            state = self.tmp / f"block{self.count}.env"
            script.write_text(f"set -eo pipefail\ncd {ROOT}\n{block.code}\nenv -0 > {state}\n")
            return ["bash", str(script)]
        python = shutil.which("python", path=self.env["PATH"])
        assert python, f"README line {block.line}: no `python` on PATH for a python block"
        script = self.tmp / f"block{self.count}.py"
        script.write_text(block.code)
        return [python, str(script)]

    def run(self, block: Block) -> None:
        cmd = self._command(block)
        r = subprocess.run(cmd, env=self.env, cwd=ROOT, capture_output=True,
                           timeout=BLOCK_TIMEOUT_S)
        out = (r.stdout + r.stderr).decode(errors="replace")
        assert r.returncode == 0, (
            f"README block at line {block.line} failed with status {r.returncode}:\n"
            f"{block.code}\n--- its output ---\n{out}")
        state = self.tmp / f"block{self.count}.env"
        if block.lang == "sh" and state.exists():
            pairs = state.read_bytes().split(b"\0")
            self.env = dict(p.decode().split("=", 1) for p in pairs if b"=" in p)

    def start(self, block: Block) -> None:
        log = self.tmp / f"job{self.count + 1}.log"
        cmd = self._command(block)
        env = {**self.env, "PYTHONUNBUFFERED": "1"}  # its lines reach the log as a terminal's would
        with open(log, "wb") as out:
            p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.jobs.append((block, p, log))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (log.read_bytes().strip() and _connectable(self.sock)):
            self.check(block, p, log)
            assert time.monotonic() < deadline, (
                f"README block at line {block.line} printed nothing or the supervisor did not "
                f"answer within {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)

    @staticmethod
    def check(block: Block, p: subprocess.Popen[bytes], log: Path) -> None:
        text = log.read_text(errors="replace")
        assert p.poll() is None, (f"README block at line {block.line} (runs until stopped) "
                                  f"exited with status {p.returncode}:\n{block.code}\n"
                                  f"--- its output ---\n{text}")
        assert "Traceback" not in text, f"README block at line {block.line}:\n{text}"

    def stop(self) -> None:
        for _, p, _ in reversed(self.jobs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            # The shell is gone, but what it started may not be (faust shuts down slowly, and
            # hangs once the supervisor after it is stopped): its whole group goes too.
            deadline = time.monotonic() + 30
            while _group_alive(p.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(p.pid):
                os.killpg(p.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies, which the container's init may be
    slow to reap, do not count)."""
    import psutil

    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    sock_dir = Path(tempfile.mkdtemp(prefix="ebr-", dir="/tmp"))  # sun_path is short
    s = Session(tmp_path, str(sock_dir / "edgebus.sock"))
    try:
        yield s
    finally:
        s.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "edgebus").exists(),
                    reason="run after ./scripts/quickstart setup (the README starts from it)")
@pytest.mark.timeout(900)
def test_every_readme_block_runs_in_order(session: Session):
    ran = 0
    for block in readme_blocks(README.read_text()):
        if block.lang not in RUN_LANGS or block.mode == "skip":
            continue
        if block.mode == "background":
            session.start(block)
        else:
            session.run(block)
        ran += 1
    time.sleep(2)  # the background blocks keep running past the last block
    for block, p, log in session.jobs:
        session.check(block, p, log)
    assert ran >= 5 and len(session.jobs) == 4  # the supervisor, a consumer, the Quix and faust apps
