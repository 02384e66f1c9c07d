"""Progress of long work, on stderr so that stdout stays clean for tables and run ids.

On a terminal: click's live bar. In a log (nohup, a batch scheduler, CI), where a bar draws nothing
until it ends, one line about every HARNESS_PROGRESS_SECONDS (default 30) or every 5% of the work,
whichever comes first (but not more than one line in 3 s), and one when it ends:

    gan: 1210/4000 steps (30%), 2.57/s, ETA 18m06s  critic -0.412 wasserstein 1.83
"""
from __future__ import annotations

import os
import sys
import time

import click


def interval() -> float:
    return float(os.environ.get("HARNESS_PROGRESS_SECONDS", "30"))


def bar(total: int, label: str, iterable=None, unit: str = "steps", item_show_func=None):
    """A context manager with `update(n)`, `current_item` and iteration over `iterable`."""
    if sys.stderr.isatty():
        return click.progressbar(iterable, length=total, label=label, file=sys.stderr, show_eta=True, show_pos=True,
                                 item_show_func=item_show_func)
    return LogLines(total, label, iterable, unit)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class LogLines:
    """The log's progress: a line every interval() seconds or 5% step, and a last one."""

    def __init__(self, total: int, label: str, iterable=None, unit: str = "steps"):
        self.total, self.label, self.iterable, self.unit = max(int(total), 0), label, iterable, unit
        self.done, self.current_item = 0, None
        self.start = self.last = time.monotonic()
        self.step = max(1, -(-self.total // 20))  # 5% of the work
        self.next_step = self.step

    def __enter__(self):
        self.start = self.last = time.monotonic()
        return self

    def __exit__(self, *exc):
        if self.done and exc[0] is None:
            self._line(final=True)
        return False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        stepped = self.done >= self.next_step
        if stepped:
            self.next_step = (self.done // self.step + 1) * self.step
        if self.done < self.total and (now - self.last >= interval() or (stepped and now - self.last >= min(3.0, interval()))):
            self._line()

    def _line(self, final: bool = False) -> None:
        now = time.monotonic()
        self.last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        if final:
            tail = f", done in {_duration(elapsed)}"
        else:
            tail = f", ETA {_duration((self.total - self.done) / rate)}" if rate > 0 and self.total else ""
        item = f"  {self.current_item}" if self.current_item else ""
        click.echo(f"{self.label}: {self.done}/{self.total} {self.unit}{share}, {rate:.2f}/s{tail}{item}", err=True)


LONG = 5000  # images: below this a draw or a labelling takes seconds, and a bar would only add lines


class _Silent:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n: int = 1) -> None:
        pass


def shown(total: int, label: str, unit: str = "images"):
    """`bar` for work over `total` images when there are many (LONG), else a bar that says nothing: the
    same loop serves a 64-image preview and a 50,000-image draw."""
    return bar(total, label, unit=unit) if total >= LONG else _Silent()
