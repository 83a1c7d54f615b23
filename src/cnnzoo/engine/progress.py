"""Progress for training and validation: tqdm bars on a terminal, plain log lines off it.

Nothing here asks the terminal for its size at import time (the crash that a hand-written
bar reading `stty size` causes under nohup, cron or CI); tqdm works it out when a bar is
drawn, and only when the stream is a terminal.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, TextIO

from ..data.progress import LogSink, Sink, progress_line


class Progress:
    """Factory of per-loop trackers. mode: auto (bar on a TTY, lines otherwise), bar, log, off."""

    def __init__(self, mode: str = "auto", *, log_every: int = 50, stream: TextIO | None = None,
                 log: Callable[[str], None] | None = None):
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if _isatty(self.stream) else "log"
        self.mode = mode
        self.log_every = log_every
        self._log = log or (lambda line: print(line, file=self.stream, flush=True))

    def write(self, line: str) -> None:
        """A line that does not tear an active bar."""
        if self.mode == "bar":
            from tqdm import tqdm

            tqdm.write(line, file=self.stream)
            self.stream.flush()
        else:
            self._log(line)

    def data_sink(self) -> Sink:
        """Where the data layer's progress (decoding a dataset) goes: a bar on a terminal, a line
        every few seconds and one at the end off it (cnnzoo.data.progress), nothing when off."""
        if self.mode == "bar":
            return _BarSink(self)
        if self.mode == "log":
            return LogSink(self.write)
        return lambda *args: None

    def loop(self, total: int, desc: str, *, initial: int = 0) -> "Tracker":
        return Tracker(self, total, desc, initial)

    def wrap(self, iterable: Iterable, total: int, desc: str) -> Iterator:
        """Iterate `iterable` (batches whose first element is the input) while tracking it."""
        with self.loop(total, desc) as tracker:
            for batch in iterable:
                yield batch
                tracker.update(len(batch[0]))


class Tracker:
    """Counts batches and images of one loop and shows running metrics, rate and ETA."""

    def __init__(self, progress: Progress, total: int, desc: str, initial: int):
        self.progress, self.total, self.desc = progress, total, desc
        self.done = self.initial = initial
        self.images = 0
        self.start = time.perf_counter()
        self.metrics: dict[str, float] = {}
        self.bar = None
        if progress.mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                            dynamic_ncols=True, file=progress.stream)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()

    @property
    def rate(self) -> float:
        return self.images / max(time.perf_counter() - self.start, 1e-9)

    def update(self, images: int, metrics: dict[str, float] | None = None) -> None:
        self.done += 1
        self.images += images
        if metrics:
            self.metrics = metrics
        if self.bar is not None:
            self.bar.set_postfix_str(self._postfix(), refresh=False)
            self.bar.update(1)
        elif self.progress.mode == "log" and (self.done % self.progress.log_every == 0):
            self.progress.write(f"{self.desc} {self.done}/{self.total} {self._postfix()} eta {self._eta()}")

    def _postfix(self) -> str:
        parts = [format_metric(k, v) for k, v in self.metrics.items()]
        parts.append(f"{self.rate:,.0f} img/s")
        return " ".join(parts)

    def _eta(self) -> str:
        elapsed = time.perf_counter() - self.start
        steps = max(self.done - self.initial, 1)
        remaining = elapsed / steps * max(self.total - self.done, 0)
        return format_seconds(remaining)


class _BarSink:
    """A tqdm bar of images decoded (total known for folders, open-ended for archives) that
    leaves one summary line when the work is done."""

    def __init__(self, progress: Progress):
        self.progress, self.bar, self.start = progress, None, time.perf_counter()

    def __call__(self, what: str, done: int, total: int | None, finished: bool) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, desc=what, unit="img", unit_scale=True, leave=False, dynamic_ncols=True,
                            file=self.progress.stream)
        self.bar.update(done - self.bar.n)
        if finished:
            self.bar.close()
            self.progress.write(progress_line(what, done, total, time.perf_counter() - self.start, True))


def format_metric(name: str, value: float) -> str:
    if name.endswith("acc") or name.startswith("top"):
        return f"{name} {100 * value:.2f}%"
    return f"{name} {value:.4g}"


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _isatty(stream: TextIO) -> bool:
    """A terminal a bar can be drawn on: a TTY with a known, non-zero width (a pty without a
    window size, as under `script` or some CI runners, reports 0x0 and tqdm draws nothing)."""
    try:
        return stream.isatty() and min(os.get_terminal_size(stream.fileno())) > 0
    except (AttributeError, ValueError, OSError):  # closed, replaced or detached streams
        return False
