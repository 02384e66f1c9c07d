"""Headless Chromium driven over its DevTools pipe, for the UI tests: pages are read when they show what
the test waits for, by the wall clock.

`--dump-dom` with `--virtual-time-budget` (what the UI test used) sometimes never finished its virtual
time: CI waited 3 x 110 s on a runs page that loads in seconds, then skipped the test, in three runs in
a row. Here one browser opens every page at once, each in a window of its own, and the test polls each
page's HTML until its words are there (five pages of the MLflow UI: ~12 s on an idle machine). The pipe
(`--remote-debugging-pipe`: commands on fd 3, replies on fd 4, each a JSON message ended by a NUL byte)
needs nothing beyond the standard library."""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path


# Both ends first to fds >= 10, so that putting one on 3 cannot close the other before it is moved.
LAUNCH = ("import fcntl, os, sys\n"
          "ends = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]\n"
          "for target, fd in zip((3, 4), ends):\n"
          "    os.dup2(fd, target)\n"
          "    os.close(fd)\n"
          "os.execv(sys.argv[3], sys.argv[3:])\n")


class BrowserGone(Exception):
    """The browser stopped answering its pipe (it crashed or hung): nothing about the page was seen."""


class Chromium:
    def __init__(self, binary: str, profile: Path, extra: tuple[str, ...] = ()):
        commands_r, self._commands = os.pipe()  # we write, the browser reads on its fd 3
        self._replies, replies_w = os.pipe()  # the browser writes on its fd 4, we read
        # A page the browser thinks hidden gets its timers throttled: every page is one the test reads.
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows", f"--user-data-dir={profile}", *extra, "about:blank"]
        # The pipe's ends go to fds 3 and 4 in a small launcher that then becomes the browser: a
        # preexec_fn would do it in the forked child, which is unsafe in a process with threads.
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(commands_r), str(replies_w), *args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(commands_r, replies_w), start_new_session=True)
        os.close(commands_r)
        os.close(replies_w)
        self._next, self._buffer = 0, b""
        self._urls: dict[str, str] = {}  # session -> the address it was opened on

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        """One DevTools command, its result (events that arrive meanwhile are dropped)."""
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._replies], [], [], left)[0]:
                raise BrowserGone(f"no answer to {method} in {timeout:.0f} s")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise BrowserGone(f"the browser closed its pipe (exit {self.proc.poll()})")
            self._buffer += chunk

    def open(self, url: str, width: int, height: int) -> str:
        """A new window of `width` x `height` CSS pixels on `url`; its session id. A window each, sized
        before the page loads: the UI draws an image chart only once it is painted in view, and a
        background tab (five pages as tabs of one window) or a new tab's default 800 x 600 left it undrawn."""
        target = self.call("Target.createTarget", {"url": "about:blank", "newWindow": True})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session)
        self.call("Page.navigate", {"url": url}, session)
        self._urls[session] = url
        return session

    def html(self, session: str) -> str:
        return self.call("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                              "returnByValue": True}, session)["result"].get("value", "")

    def wait_for(self, pages: dict[str, tuple[str, tuple[str, ...]]], timeout: float, reload_every: float = 60,
                 size: tuple[int, int] = (1300, 2000)) -> dict[str, str]:
        """{name: (url, words)} -> {name: the page's HTML}, each read once it holds all its words, or at
        `timeout` seconds as it then stands (the test's assertions say what is missing). A page still
        without its words is loaded again every `reload_every` seconds: the UI draws a chart once, from
        the artifact listing it got, and a loaded server answers that listing late."""
        sessions = {name: self.open(url, *size) for name, (url, _) in pages.items()}
        seen: dict[str, str] = {}
        done = lambda name: name in seen and all(w in seen[name] for w in pages[name][1])  # noqa: E731
        start = last_load = time.monotonic()
        while True:
            for name, session in sessions.items():
                if not done(name):
                    seen[name] = self.html(session)
            now = time.monotonic()
            if all(map(done, pages)) or now - start > timeout:
                return seen
            if now - last_load > reload_every:
                for name, session in sessions.items():
                    if not done(name):
                        # From its address, not Page.reload: the UI rewrites the address once it has read
                        # it (a view's parameters go), and a reload would open another view.
                        self.call("Page.navigate", {"url": "about:blank"}, session)
                        self.call("Page.navigate", {"url": self._urls[session]}, session)
                last_load = now
            time.sleep(0.5)

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except ProcessLookupError:
            pass
        self.proc.wait()
        os.close(self._commands)
        os.close(self._replies)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
