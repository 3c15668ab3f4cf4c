"""SIGINT, SIGTERM and SIGHUP as Interrupted, an exception on which a run, a study or a sweep stops
cleanly (a run never in the middle of writing an epoch's files)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

from cnnlab.errors import signal_name

# Ctrl-C, a scheduler's or kill's stop, and the terminal or SSH session closing (SIGHUP, which
# would otherwise end the process at once, leaving its run 'running')
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
# A burst (Ctrl-C pressed again and again, a supervisor's SIGINT then SIGTERM) must not cut short the
# stop the first signal began: another Interrupted raised in its cleanup (a study settling its cells,
# up to runs.OWNERS_GRACE), or in the command's report after it, left runs marked running and printed
# no run directory. Signals this soon after the first are the same request; one later is insisting,
# for a stop that hangs: it raises again, or, where signals are held off, ends the process at once.
BURST_SECONDS = 10.0
# when this process's stop began (its first signal); reset as each command or run installs its handler
_stopped_at: float | None = None


def stopping() -> bool:
    """Whether a stop began less than BURST_SECONDS ago."""
    return _stopped_at is not None and time.monotonic() - _stopped_at < BURST_SECONDS


class Interrupted(KeyboardInterrupt):
    """A STOP_SIGNALS signal arrived: the run stops cleanly; exit code 128 + signal number."""

    def __init__(self, signum: int, message: str | None = None):
        super().__init__(message or signal_name(signum))
        self.signum = signum

    @classmethod
    def of(cls, e: KeyboardInterrupt, what: str, then: str, received: int | None = None) -> "Interrupted":
        """An Interrupted for a study or sweep (`what`) that `e` stopped, saying `then` (how to go on).
        e may be a bare KeyboardInterrupt that Ray made of a signal: then the signal is the one our
        handler `received`, if it saw one, else unknown."""
        signum = getattr(e, "signum", None) or received
        return cls(signum or signal.SIGINT, f"{what} stopped by {signal_name(signum)}; {then}")


class Signals:
    """Turn STOP_SIGNALS into Interrupted, but never in the middle of writing an epoch's files
    (critical: the first signal is held, pending, and raised when the writes are done); further
    signals of the same burst change nothing (see BURST_SECONDS)."""

    def __init__(self):
        self.pending: int | None = None
        self.critical = False
        self.received: int | None = None

    def handler(self, signum, frame):
        global _stopped_at
        if stopping():
            return  # the stop under way is this signal's too
        insisting = _stopped_at is not None
        _stopped_at = time.monotonic()
        self.received = self.received or signum  # kept: Tune, for one, catches what we raise and returns
        if not self.critical:
            raise Interrupted(signum)
        if insisting:  # held off for longer than a burst lasts (a write, a flush to a stalled reader): end it now,
            os._exit(128 + signum)  # unflushed (a flush may be what hangs); files stay whole, every write being atomic
        self.pending = self.pending or signum

    @contextlib.contextmanager
    def installed(self):
        global _stopped_at
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        _stopped_at = None  # a new command or run: none being stopped (tests run many in one process)
        # a signal the process was started ignoring stays ignored: `nohup cnnlab train ...` runs on
        # when its terminal closes, as does a job a script started in the background (SIGINT)
        old = {s: signal.signal(s, self.handler) for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def deferred(self):
        self.critical = True
        try:
            yield
        finally:
            self.critical = False
            if self.pending is not None:
                raise Interrupted(self.pending)


def interruptible():
    """While in this block STOP_SIGNALS raise Interrupted (carrying the signal), for work
    around runs such as a study's; run() installs its own handler while it trains."""
    return Signals().installed()
