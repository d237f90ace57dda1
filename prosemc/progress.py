"""Progress of long work on stderr: percentage, count and ETA; redrawn in place on a terminal, else a line every few s.

    with Progress("evaluating", total=8) as progress:       # terminal: one line rewritten in place
        for name in names:                                  # file or pipe: "evaluating: 25% (2/8) chelsea, 12 s, ETA 36 s"
            work(name)                                      #   at most every `interval` seconds, plus a last line
            progress.advance(note=name)

`total=None` counts without a percentage. `log` prints a lasting line (a result, a warning) between updates.
`silence` (a context variable, set by the CLI's -q) quiets every Progress and `note` created while it is True.
`heartbeat=True` also shows the line while no update comes (one long step), so a log never goes silent.
A finished run always ends with one line that says how long it took, so a log file shows every stage.
"""

from __future__ import annotations

import sys
import threading
import time
from contextvars import ContextVar
from typing import Callable, TextIO

TERMINAL_REDRAW_S = 0.1
# True while a caller wants no progress and no notes (the CLI's -q): set it with `silence.set(True)`, reset the token.
silence: ContextVar[bool] = ContextVar("prosemc_progress_silence", default=False)


def note(text: str) -> None:
    """A lasting line on stderr (e.g. "prosemc: converting SmolLM2 once"), unless silenced."""
    if not silence.get() and sys.stderr is not None:
        print(text, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min': short and exact enough for an ETA."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class Progress:
    """Percentage and ETA of `total` units of work for one label, written to `stream` (stderr by default)."""

    def __init__(self, label: str, total: float | None = None, *, stream: TextIO | None = None,
                 interval: float = 5.0, quiet: bool = False, heartbeat: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self.done = 0.0
        self._base = 0.0  # units already done when timing started (see restart)
        self._eta_at: float | None = None  # clock time the work should end, as estimated at the last update
        self.note = ""
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.quiet = quiet or silence.get()
        self.clock = clock
        self.started = clock()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_shown = self.started
        self._drawn = False  # a terminal line is on screen and must be cleared before other output
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, daemon=True) if heartbeat and not self.quiet else None
        if self._beat is not None:
            self._beat.start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self.close(failed=kind is not None)

    def restart(self, done: float = 0, total: float | None = None) -> None:
        """Start timing afresh from `done` units (e.g. a resumed run), so the ETA counts only new work."""
        with self._lock:
            self.started, self.done, self._base, self._eta_at = self.clock(), done, done, None
            self.total = total if total is not None else self.total

    def advance(self, units: float = 1, note: str = "") -> None:
        """Count `units` more units done; `note` says what is being worked on (shown after the numbers)."""
        self.update(self.done + units, note)

    def update(self, done: float, note: str = "") -> None:
        """Set how many units are done; shown now on a terminal (throttled), else every `interval` seconds."""
        with self._lock:
            self.done = done
            self.note = note
            now = self.clock()
            if self.total and self._base < done < self.total:
                self._eta_at = now + (now - self.started) / (done - self._base) * (self.total - done)
            else:
                self._eta_at = None
            self._show_if_due()

    def log(self, text: str) -> None:
        """Print a lasting line (on a terminal, above the progress line)."""
        with self._lock:
            self._clear()
            self._write(text + "\n")

    def close(self, failed: bool = False) -> None:
        """End the display: the final line with the elapsed time (`failed`: only clear the terminal line)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with self._lock:
            self._clear()
            if not failed:
                self.done = self.total or self.done  # finished: every unit is done
                count = f"{_number(self.done)}/{_number(self.total)}" if self.total else _number(self.done)
                self._write(f"{self.label}: done ({count}) in {duration(self.clock() - self.started)}\n")

    def line(self, now: float) -> str:
        """The status line: 'label: 40% (4/10) note, 12 s, ETA 18 s' (the rate so far, counted down since)."""
        elapsed = now - self.started
        parts = [f"{self.label}:"]
        if self.total:
            fraction = min(1.0, self.done / self.total)
            parts.append(f"{fraction:.0%} ({_number(self.done)}/{_number(self.total)})")
        else:
            parts.append(f"{_number(self.done)}")
        if self.note:
            parts.append(self.note)
        text = " ".join(parts) + f", {duration(elapsed)}"
        if self._eta_at is not None:  # counts down between updates (a long step shows a falling ETA)
            text += f", ETA {duration(max(1.0, self._eta_at - now))}"
        return text

    def _show_if_due(self) -> None:
        now = self.clock()
        if self.tty and now - self._last_shown >= TERMINAL_REDRAW_S:
            self._draw(self.line(now))
        elif not self.tty and now - self._last_shown >= self.interval:
            self._write(self.line(now) + "\n")

    def _heartbeat(self) -> None:
        while not self._stop.wait(1.0 if self.tty else self.interval / 5):
            with self._lock:
                self._show_if_due()

    def _draw(self, text: str) -> None:
        self._write("\r\x1b[2K" + text)
        self._drawn = True

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r\x1b[2K")
            self._drawn = False

    def _write(self, text: str) -> None:
        if self.quiet:
            return
        self.stream.write(text)
        self.stream.flush()
        self._last_shown = self.clock()


def _number(value: float | None) -> str:
    return "?" if value is None else str(int(value))  # whole units done (a stage may report fractions)
