"""Progress of long data work (decoding tens of thousands of images) for whoever is listening.

The data layer cannot know where progress should go (a bar on a terminal, log lines in a file,
nothing in a test), so it reports to a sink that the caller installs for the duration of a call
with `reporting(sink)`; the training engine installs one that honours `--progress`. With no sink
installed, a note is logged every `LOG_SECONDS` and at the end (the CLI shows notes on stderr).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

log = logging.getLogger(__name__)

# sink(what, done, total or None when unknown, finished)
Sink = Callable[[str, int, "int | None", bool], None]
_SINK: ContextVar[Sink | None] = ContextVar("cnnzoo_data_progress", default=None)
LOG_SECONDS = 5.0


@contextlib.contextmanager
def reporting(sink: Sink | None) -> Iterator[None]:
    """Send the data layer's progress to `sink` while inside (None: the default log notes)."""
    token = _SINK.set(sink)
    try:
        yield
    finally:
        _SINK.reset(token)


class Counter:
    """Counts the items of one long piece of work and reports them to the installed sink."""

    def __init__(self, what: str, total: int | None = None):
        self.what, self.total, self.done = what, total, 0
        self.sink = _SINK.get() or LogSink()

    def add(self, n: int) -> None:
        self.done += n
        self.sink(self.what, self.done, self.total, False)

    def finish(self) -> None:
        self.sink(self.what, self.done, self.total, True)


class LogSink:
    """A line every `every` seconds and one at the end: "decoding X: 12,288 images, 2,400/s"."""

    def __init__(self, say: Callable[[str], None] | None = None, every: float = LOG_SECONDS):
        self.say = say or log.info
        self.every, self.start = every, time.perf_counter()
        self.last = self.start

    def __call__(self, what: str, done: int, total: int | None, finished: bool) -> None:
        now = time.perf_counter()
        if not finished and now - self.last < self.every:
            return
        self.last = now
        self.say(progress_line(what, done, total, now - self.start, finished))


def progress_line(what: str, done: int, total: int | None, elapsed: float, finished: bool) -> str:
    rate = done / max(elapsed, 1e-9)
    count = f"{done:,}/{total:,}" if total else f"{done:,}"
    if finished:
        return f"{what}: {count} images in {elapsed:.1f}s ({rate:,.0f}/s)"
    eta = f", about {(total - done) / max(rate, 1e-9):.0f}s left" if total else ""
    return f"{what}: {count} images ({rate:,.0f}/s{eta})"
