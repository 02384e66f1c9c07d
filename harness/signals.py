"""Signals while a command runs: SIGTERM (a scheduler's time limit, `kill`) ends a run as Ctrl-C does,
marked KILLED rather than left RUNNING; neither lands in the middle of a tracking-store write or is
dropped inside a garbage-collector callback. `handled()` installs this for one command and restores
what was there after, so that library callers and tests keep their own handlers.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, ending runs as Ctrl-C does (KILLED), told apart for the exit code and in the run: a
    scheduler's time limit or preemption, whose interrupted generator the next worker continues."""
    signal = "SIGTERM"


# Modules in the middle of a write to the tracking store: an exception raised there can leave a
# SQLite transaction open in this process, which the run's own ending (and its heartbeat) then
# wait on until the scheduler's SIGKILL. Seen under Slurm's scancel; the signal waits 50 ms instead.
MID_WRITE = ("sqlalchemy.", "sqlite3", "mlflow.store.", "mlflow.tracking.", "urllib3.", "requests.", "http.client")


def deferred(frame, handler) -> bool:
    """Re-arm `handler` 50 ms later when the signal came in the middle of a store write."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(MID_WRITE):
            signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return True
        frame = frame.f_back
    return False


def terminate(signum, frame):
    if not deferred(frame, terminate):
        raise Terminated


def interrupt(signum, frame):
    """Ctrl-C, deferred like SIGTERM while a store write is in flight."""
    if not deferred(frame, interrupt):
        raise KeyboardInterrupt


def unraisable(previous):
    """sys.unraisablehook while a command runs. The garbage collector runs weakref callbacks and __del__
    between any two bytecodes; a signal's exception raised inside one is printed with a traceback and
    dropped, and the command went on as if no signal had come (seen under Slurm's scancel: a cancelled
    worker finished its item). Such a signal is raised again 10 ms later, in ordinary code, silently."""
    def hook(event):
        if isinstance(event.exc_value, KeyboardInterrupt):
            handler = terminate if isinstance(event.exc_value, Terminated) else interrupt
            signal.signal(signal.SIGALRM, handler)
            signal.setitimer(signal.ITIMER_REAL, 0.01)
            return
        previous(event)
    return hook


@contextlib.contextmanager
def handled():
    """SIGTERM and SIGINT as above for the duration (main thread only: signals are delivered there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, h) for s, h in ((signal.SIGTERM, terminate), (signal.SIGINT, interrupt))}
    previous[signal.SIGALRM] = signal.getsignal(signal.SIGALRM)
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable(sys.unraisablehook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        signal.setitimer(signal.ITIMER_REAL, 0)  # a deferred signal that never came due
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
