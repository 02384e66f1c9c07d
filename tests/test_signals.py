"""harness/signals.py: a signal never lands in a store write, and never vanishes in a GC callback."""
from __future__ import annotations

import sys

import pytest


def test_a_signal_during_a_store_write_waits_for_the_write(monkeypatch):
    # SIGTERM raised inside SQLAlchemy left a SQLite transaction open that the run's ending then
    # waited on until Slurm's SIGKILL: inside a store call the signal is re-armed 50 ms later instead.
    import signal
    from types import SimpleNamespace as Frame

    from harness import signals
    armed = []
    monkeypatch.setattr(signal, "signal", lambda signum, handler: armed.append((signum, handler)))
    monkeypatch.setattr(signal, "setitimer", lambda which, seconds: armed.append(seconds))
    caller = Frame(f_globals={"__name__": "harness.generators.gan"}, f_back=None)
    writing = Frame(f_globals={"__name__": "sqlalchemy.engine.base"}, f_back=caller)
    assert signals.terminate(signal.SIGTERM, writing) is None and signals.interrupt(signal.SIGINT, writing) is None
    assert armed == [(signal.SIGALRM, signals.terminate), 0.05, (signal.SIGALRM, signals.interrupt), 0.05]
    with pytest.raises(signals.Terminated):
        signals.terminate(signal.SIGTERM, caller)
    with pytest.raises(KeyboardInterrupt):
        signals.interrupt(signal.SIGINT, caller)


def test_a_sigterm_that_lands_in_a_weakref_callback_comes_again(capsys):
    # The garbage collector runs weakref callbacks between any two bytecodes, and Python prints and drops
    # an exception raised in one: a scancel'd Slurm worker went on with its item. Here a callback signals
    # this process and keeps running, so the handler raises inside it; the command's hook raises it again.
    import gc
    import os
    import signal
    import time
    import weakref

    from harness import signals
    previous = signal.signal(signal.SIGTERM, signals.terminate), signal.getsignal(signal.SIGALRM), sys.unraisablehook
    sys.unraisablehook = signals.unraisable(sys.unraisablehook)

    def callback(_):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(100_000))  # bytecodes in the callback: the handler runs in here

    class Thing:
        pass
    thing = Thing()
    ref = weakref.ref(thing, callback)  # noqa: F841
    try:
        with pytest.raises(signals.Terminated):
            del thing
            gc.collect()
            time.sleep(2)  # the hook's re-armed alarm raises it here, 10 ms later
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGALRM, previous[1])
        sys.unraisablehook = previous[2]
    assert "Traceback" not in capsys.readouterr().err  # dropped silently, raised again
