"""A headless Chromium driven over the DevTools protocol (websocket-client), for the console test
and the screenshots. Only what those need: open a page, evaluate JS, set a viewport, capture."""

from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import websocket


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Browser:
    def __init__(self) -> None:
        exe = chromium_path()
        assert exe is not None
        self.profile = tempfile.mkdtemp(prefix="eb-chromium-")
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--mute-audio",
             f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = None
        deadline = time.monotonic() + 60
        assert self.proc.stderr is not None
        while url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise RuntimeError("chromium exited before DevTools started")
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                url = m.group(1)
        if url is None:
            raise RuntimeError("chromium did not start DevTools within 60 s")
        # Keep reading its stderr: once the pipe's 64 KiB fill up (its warnings), Chromium
        # blocks in write() and the page stops answering.
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        port = int(re.search(r":(\d+)/", url).group(1))  # type: ignore[union-attr]
        import urllib.request

        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60,
                                              suppress_origin=True)
        self._ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> Any:
        i = next(self._ids)
        self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == i:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def open(self, url: str, width: int, height: int, mobile: bool = False) -> None:
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=2 if mobile else 1, mobile=mobile)
        self.send("Page.enable")
        # Script errors of the page are collected where the test can read them.
        self.send("Page.addScriptToEvaluateOnNewDocument", source=(
            "window.__errors = []; addEventListener('error', e => __errors.push(String(e.message)));"
            "addEventListener('unhandledrejection', e => __errors.push(String(e.reason)));"))
        self.send("Page.navigate", url=url)

    def eval(self, expr: str) -> Any:
        r = self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = self.eval(expr)
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"page never satisfied {expr}")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        self.eval("window.scrollTo(0, 0)")
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


if __name__ == "__main__":  # a manual look: python tests/http/cdp.py URL OUT.png [width height]
    import sys

    b = Browser()
    try:
        w, h = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (390, 844)
        b.open(sys.argv[1], w, h, mobile=w < 600)
        time.sleep(float(os.environ.get("WAIT", "3")))
        print(b.eval("document.body.innerText.slice(0, 500)"))
        b.screenshot(Path(sys.argv[2]))
    finally:
        b.close()
