"""Whether a RUNNING run is still alive, and the heartbeat that tells.

A process that dies without ending its runs (SIGKILL, the OOM killer, a closed laptop lid, a
preempted node) leaves them RUNNING in MLflow forever, and the cache, `--resume` and the
comparator would go on waiting for them or skipping them. So every harness run carries
  harness.owner      host:pid:start of the process that opened it (start: when the process began,
                     in clock ticks since boot on Linux, so that a reused pid is not taken for the
                     old process, and a stepped wall clock does not make a live one look new)
  harness.heartbeat  unix seconds, refreshed every `interval` seconds by one thread per process
A RUNNING run is dead when its owner is a process of this host that no longer exists, or, for
another host's runs, when its heartbeat is older than `grace` seconds. `reap` marks the dead runs of
an experiment FAILED with the reason; every command calls it when it opens the store.

HARNESS_HEARTBEAT_SECONDS sets the interval (default 30 s); the grace period is 4 intervals, so a
worker on another machine is declared dead 2 minutes after its last sign of life.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import sys
from mlflow.entities import RunTag

OWNER, HEARTBEAT, DIED = "harness.owner", "harness.heartbeat", "harness.died"
NOTE = "mlflow.note.content"


def retrying(call, conflicts: tuple[str, ...], tries: int, pause):
    """call(), again while it fails with one of `conflicts` in its message, up to `tries` times in all,
    sleeping pause(attempt) seconds between: the one shape of every race between workers that insert
    the same row at once (the loser finds the row made on its next try)."""
    for attempt in range(tries):
        try:
            return call()
        except Exception as e:
            if attempt == tries - 1 or not any(c in f"{type(e).__name__} {e}" for c in conflicts):
                raise
            time.sleep(pause(attempt))


def wait_until(ready, timeout: float | None, every: float, beat=None):
    """Poll ready() every `every` seconds until it returns something true (returned) or `timeout`
    seconds pass (None; None timeout: no end). `beat()` runs before each sleep: a check that may
    raise (a store that stopped answering) ends the wait."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        if (value := ready()):
            return value
        if deadline is not None and time.monotonic() >= deadline:
            return None
        if beat is not None:
            beat()
        time.sleep(every if deadline is None else max(0.0, min(every, deadline - time.monotonic())))


def interval() -> float:
    try:
        value = float(os.environ.get("HARNESS_HEARTBEAT_SECONDS", "30"))
    except ValueError:
        value = 30.0
    return value if value > 0 else 30.0


def grace() -> float:
    return 4 * interval()


def _started(pid: int) -> int | None:
    """When process `pid` started, as a number that stays the same for its whole life.

    On Linux, the clock ticks from boot to its start (/proc/PID/stat, field 22): psutil's
    create_time() adds the boot time, which the kernel derives from the wall clock, so it moves
    whenever the clock is stepped or slewed (NTP, a VM's clock sync: 4 s, then 109 s within minutes
    on one of our machines), and a live worker's owner tag stopped matching its own process: the
    waiter took over a generator still training. Elsewhere psutil's start time, which macOS and
    Windows keep from the process's creation."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # fields after "(comm)" start at field 3
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None  # Linux: no such process
    except (OSError, ValueError, IndexError):
        return None
    import psutil
    try:
        return int(psutil.Process(pid).create_time() * 100)
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def owner() -> str:
    """This process, as the `harness.owner` tag names it."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def why_dead(run, now: float | None = None) -> str | None:
    """Why a RUNNING run's process is gone, or None while it may be alive (or is not ours to judge)."""
    tags = run.data.tags
    if run.info.status != "RUNNING" or OWNER not in tags:
        return None  # runs of other tools (or of an older harness) are left to their owners
    host, pid, started = tags[OWNER].rsplit(":", 2)
    now = time.time() if now is None else now
    if host == socket.gethostname():
        alive = pid.isdigit() and str(_started(int(pid))) == started
        return None if alive else f"its process (pid {pid} on this host) is gone"
    beat = float(tags.get(HEARTBEAT, run.info.start_time / 1000))
    age = now - beat
    if age > grace():
        return f"no heartbeat from its process (pid {pid} on {host}) for {age:.0f} s (grace period {grace():.0f} s)"
    return None


def stderr(message: str) -> None:
    """The default reporter of a Store: one line on stderr."""
    print(message, file=sys.stderr, flush=True)


def reap(client, experiment_id: str, say=stderr) -> list[str]:
    """Mark every dead RUNNING run of the experiment FAILED, its description saying why; return their ids."""
    runs = client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
    dead = [run.info.run_id for run in runs if mark_if_dead(client, run)]
    if dead:
        say(f"note: {len(dead)} run(s) whose process died were still RUNNING; marked FAILED: {', '.join(dead)}")
    return dead


def mark_if_dead(client, run) -> str | None:
    """If the run's process is gone, mark it FAILED with the reason and return the reason."""
    why = why_dead(run)
    if why is None:
        return None
    last = float(run.data.tags.get(HEARTBEAT, run.info.start_time / 1000))
    note = (f"**Died**: {why}, without ending this run (killed, out of memory, or a lost machine); marked "
            f"FAILED by {owner()} at {time.strftime('%Y-%m-%d %H:%M:%S')}. The next run of the same phase "
            f"continues an interrupted generator from its last checkpoint.\n\n{run.data.tags.get(NOTE, '')}")
    client.log_batch(run.info.run_id, tags=[RunTag(DIED, why), RunTag(NOTE, note)], synchronous=True)
    client.set_terminated(run.info.run_id, "FAILED", end_time=int(last * 1000))
    return why


class Heartbeat:
    """One thread per process refreshes `harness.heartbeat` on every run it holds open. A write that
    fails twice in a row means the store stopped answering: `lost` says so, and long loops check it
    (`Store.check_reachable`) instead of training on for minutes until their next log call."""

    def __init__(self, client):
        self.client = client
        self.runs: set[str] = set()
        self.lost: str | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._failures = 0

    def add(self, run_id: str) -> None:
        with self._lock:
            self.runs.add(run_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="harness-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, run_id: str) -> None:
        with self._lock:
            self.runs.discard(run_id)

    def _loop(self) -> None:
        while True:
            time.sleep(interval())
            with self._lock:
                runs = sorted(self.runs)
            try:
                for run_id in runs:
                    self.client.log_batch(run_id, tags=[RunTag(HEARTBEAT, f"{time.time():.0f}")], synchronous=True)
                self._failures = 0
            except Exception as e:  # the thread must outlive a store that comes and goes
                self._failures += 1
                if self._failures >= 2 and runs:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    self.lost = first[:300]
