"""Where a run's lines go, and how its loops show progress.

Two kinds of line: *results* (`Progress.write`: the banner, one line per epoch, the test
metrics) go to stdout, so `cnnzoo train > run.log` keeps the table; everything about progress
(`Progress.note`: bars, log lines, warnings, how a run stopped) goes to stderr. On a terminal a
loop is a tqdm bar; off it (a pipe, a file, nohup, CI) a loop writes plain lines: every
`log_every` steps, at least every `log_seconds` seconds, and at the end of every training epoch.

Nothing here asks the terminal for its size at import time (the crash that a hand-written
bar reading `stty size` causes under nohup, cron or CI); tqdm works it out when a bar is
drawn, and only when the stream is a terminal. The bar puts loss, accuracy and images/s right
after the bar so that they stay readable at 80 columns; the ETA covers the epoch and the run.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, TextIO

from tqdm import tqdm

from ..data.progress import LogSink, Sink, progress_line

# The fields a bar shows, most important first: a narrow terminal trims from the right.
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {info}"


class Progress:
    """Factory of per-loop trackers and writer of a run's lines.

    mode: auto (bar on a TTY, lines otherwise), bar, log or off (no progress; results and notes
    are still written). `out`/`stream`: where results / progress and notes go (stdout / stderr).
    `log`: when given, every line of both kinds goes to it instead (tests, embedding).
    """

    def __init__(self, mode: str = "auto", *, log_every: int = 50, log_seconds: float = 30.0,
                 stream: TextIO | None = None, out: TextIO | None = None, log: Callable[[str], None] | None = None):
        self.stream = stream or sys.stderr
        self.out = out or sys.stdout
        if mode == "auto":
            mode = "bar" if _isatty(self.stream) else "log"
        self.mode = mode
        self.log_every = log_every
        self.log_seconds = log_seconds
        self._log = log
        self.run_clock: RunClock | None = None

    def write(self, line: str) -> None:
        """A result line (stdout), drawn without tearing an active bar."""
        self._emit(line, self.out)

    def note(self, line: str) -> None:
        """A progress line, note or warning (stderr), drawn without tearing an active bar."""
        self._emit(line, self.stream)

    def _emit(self, line: str, stream: TextIO) -> None:
        if self._log is not None:
            self._log(line)
        elif self.mode == "bar":
            tqdm.write(line, file=stream)  # clears the bars on the terminal first, then redraws them
            stream.flush()
        else:
            print(line, file=stream, flush=True)

    def start_run(self, total_steps: int, done_steps: int = 0) -> None:
        """Count the steps of the training loops from here on, for the whole run's ETA."""
        self.run_clock = RunClock(total_steps, done_steps)

    def data_sink(self) -> Sink:
        """Where the data layer's progress (decoding a dataset) goes: a bar on a terminal, a line
        every few seconds and one at the end off it (cnnzoo.data.progress), nothing when off."""
        if self.mode == "bar":
            return _BarSink(self)
        if self.mode == "log":
            return LogSink(self.note)
        return lambda *args: None

    def loop(self, total: int, desc: str, *, initial: int = 0) -> "Tracker":
        """A training loop: its steps count towards the run's ETA."""
        return Tracker(self, total, desc, initial, training=True)

    def wrap(self, iterable: Iterable, total: int, desc: str) -> Iterator:
        """Iterate `iterable` (batches whose first element is the input) while tracking it
        (an evaluation loop: validation, test, `cnnzoo eval`)."""
        with Tracker(self, total, desc, 0, training=False) as tracker:
            for batch in iterable:
                yield batch
                tracker.update(len(batch[0]))


class RunClock:
    """Steps done out of the run's total since training started; the whole run's ETA, which
    includes the validation passes because it is measured over whole epochs of wall time."""

    def __init__(self, total: int, done: int):
        self.total, self.done, self.first = total, done, done
        self.start = time.perf_counter()

    def step(self) -> None:
        self.done += 1

    def remaining(self) -> float | None:
        steps = self.done - self.first
        if steps <= 0:
            return None
        return (time.perf_counter() - self.start) / steps * max(self.total - self.done, 0)


class Tracker:
    """Counts batches and images of one loop and shows running metrics, rate and ETA."""

    def __init__(self, progress: Progress, total: int, desc: str, initial: int, *, training: bool):
        self.progress, self.total, self.desc, self.training = progress, total, desc, training
        self.done = self.initial = self.logged = initial
        self.images = 0
        self.start = self.last_line = time.perf_counter()
        self.metrics: dict[str, float] = {}
        self.bar = None
        if progress.mode == "bar":
            self.bar = _InfoBar(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                                dynamic_ncols=True, file=progress.stream, bar_format=BAR_FORMAT)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.progress.mode == "log" and self.training and self.done > self.logged:
            self._log_line()  # every training epoch says where it ended, even cut short by max_steps

    @property
    def rate(self) -> float:
        return self.images / max(time.perf_counter() - self.start, 1e-9)

    def update(self, images: int, metrics: dict[str, float] | None = None) -> None:
        self.done += 1
        self.images += images
        if metrics:
            self.metrics = metrics
        clock = self.progress.run_clock if self.training else None
        if clock is not None:
            clock.step()
        if self.bar is not None:
            self.bar.info = self.status()
            self.bar.update(1)
        elif self.progress.mode == "log" and self._line_due():
            self._log_line()

    def _line_due(self) -> bool:
        """Off a terminal: every log_every steps and every log_seconds (and at the end of an epoch)."""
        return (self.done % self.progress.log_every == 0
                or time.perf_counter() - self.last_line >= self.progress.log_seconds)

    def _log_line(self) -> None:
        self.last_line, self.logged = time.perf_counter(), self.done
        self.progress.note(f"{self.desc} {self.done}/{self.total} {self.status()}")

    def status(self) -> str:
        """`loss 1.58 acc 47.41% 5,354 img/s eta 0:03, run 1:42`: metrics, rate, then the ETAs."""
        parts = [format_metric(k, v) for k, v in self.metrics.items()]
        parts.append(f"{self.rate:,.0f} img/s")
        parts.append(f"eta {format_seconds(self._eta())}")
        clock = self.progress.run_clock if self.training else None
        run_left = clock.remaining() if clock is not None else None
        if run_left is not None:
            parts[-1] += f", run {format_seconds(run_left)}"
        return " ".join(parts)

    def _eta(self) -> float:
        elapsed = time.perf_counter() - self.start
        steps = max(self.done - self.initial, 1)
        return elapsed / steps * max(self.total - self.done, 0)


class _InfoBar(tqdm):
    """A tqdm bar with one more field for BAR_FORMAT, `info` (tqdm's own postfix field comes
    with a leading comma)."""

    info = ""

    @property
    def format_dict(self) -> dict:
        return {**super().format_dict, "info": self.info}


class _BarSink:
    """A tqdm bar of images decoded (total known for folders, open-ended for archives) that
    leaves one summary line when the work is done."""

    def __init__(self, progress: Progress):
        self.progress, self.bar, self.start = progress, None, time.perf_counter()

    def __call__(self, what: str, done: int, total: int | None, finished: bool) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=what, unit="img", unit_scale=True, leave=False, dynamic_ncols=True,
                            file=self.progress.stream)
        self.bar.update(done - self.bar.n)
        if finished:
            self.bar.close()
            self.progress.note(progress_line(what, done, total, time.perf_counter() - self.start, True))


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
