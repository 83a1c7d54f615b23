"""Stop on SIGINT/SIGTERM/SIGHUP at the next safe point instead of dying mid-step.

The first signal only raises a flag: the trainer finishes the step it is in, saves a
checkpoint, prints the command that resumes the run, and exits with 128 + the signal number
(130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP: a closed terminal or SSH session). A second signal raises KeyboardInterrupt at once; a save
that it interrupts leaves the previous checkpoint in place (see checkpoint.atomic_save).
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop before training started (loading and decoding data): nothing to save, so leave at once."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """Context manager installing the handlers; `requested` is the first signal number or None.

    Until `arm()` (the first training step), a signal raises `Interrupted` at once: a decode of a
    large dataset stops within seconds instead of finishing first.

    `deferred=True` (several processes): a signal is only `received` here; `requested` is set by
    the caller once every process has agreed to stop (cnnzoo.engine.distributed), so that they all
    stop after the same step."""

    def __init__(self, *, deferred: bool = False) -> None:
        self.requested: int | None = None
        self.received: int | None = None  # the first signal this process got
        self.deferred = deferred
        self.armed = False
        self._previous: dict[int, Any] = {}

    def arm(self) -> None:
        self.armed = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers only work there
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        # A plain print, not logging: a handler that took the logging module's locks could
        # deadlock when the signal lands while the main thread holds them.
        if self.received is not None:
            print(f"\nsecond {signal.Signals(signum).name}: stopping now", file=sys.stderr, flush=True)
            raise KeyboardInterrupt
        self.received = signum
        if not self.armed:
            self.requested = signum
            raise Interrupted(signum)
        if not self.deferred:
            self.requested = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
              "(press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    @property
    def exit_code(self) -> int:
        return 128 + int(self.requested or 0)
