"""Progress of long loops as ``label k/N  elapsed m:ss  ETA m:ss`` lines.

On a terminal one line is redrawn in place with ``\\r``; anywhere else (a pipe, a log file,
CI) plain lines are printed, at most one every ``interval`` seconds plus the first and the
last, and never a terminal escape code. Library functions take an optional
``progress(done, total)`` callable (default: quiet); scripts pass a :class:`Progress`.
"""

import math
import sys
import time
from typing import Callable, Optional, TextIO

from cnnvis_tf.errors import InputError

__all__ = ["Progress", "ProgressFn", "format_duration", "is_terminal", "check_progress"]

ProgressFn = Callable[[float, float], None]

TTY_INTERVAL = 0.2  # seconds between redraws on a terminal
LOG_INTERVAL = 10.0  # seconds between plain lines elsewhere


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False for pipes, files, closed)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def format_duration(seconds: Optional[float]) -> str:
    """``m:ss`` or ``h:mm:ss``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = int(round(max(0.0, seconds)))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def check_progress(progress):
    """Returns ``progress`` if it is None or callable, else raises the library's error."""
    if progress is None or callable(progress):
        return progress
    raise InputError("Invalid value received for argument `progress`. Expected None or a "
                     f"callable progress(done, total). Received: progress={progress!r}")


class Progress:
    """Counts ``total`` units of work and reports ``k/N``, elapsed time and ETA.

    Args:
      total: units of work (examples, levels, runs, ...).
      label: what is counted, printed first (e.g. ``"lbfgs"``).
      unit: word after ``k/N`` (e.g. ``"examples"``).
      stream: where lines go (default: ``sys.stderr``, read at each write).
      interval: seconds between lines (default 0.2 on a terminal, 10 elsewhere); the first
        update and the last (``k == N``) are always printed.
      clock: time source (``time.monotonic``; tests inject a fake one).
      enabled: False prints nothing (the counting still works).
      inplace: redraw one line with ``\\r`` (default: on a terminal); False prints whole
        lines also on a terminal, for coarse loops whose other log lines would interleave.

    Use ``update(k)``/``advance()``, or pass the object as a ``progress(done, total)``
    callback; :meth:`sub` gives the callback of a sub-task occupying part of the range.
    """

    def __init__(self, total: int, label: str = "", *, unit: str = "",
                 stream: Optional[TextIO] = None, interval: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, enabled: bool = True,
                 inplace: Optional[bool] = None):
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise InputError("Invalid value received for argument `total`. Expected an "
                             f"integer >= 0. Received: total={total!r}")
        self.total, self.label, self.unit = total, label, unit
        self._stream, self._clock, self.enabled = stream, clock, enabled
        self.tty = is_terminal(self.stream) if inplace is None else bool(inplace) and \
            is_terminal(self.stream)
        self.interval = (TTY_INTERVAL if self.tty else LOG_INTERVAL) if interval is None \
            else float(interval)
        self.start = clock()
        self.done = 0.0
        self.lines = 0  # lines (or redraws) written
        self._last = None
        self._width = 0
        self._pending = False  # a redrawn terminal line not yet ended by a newline

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def line(self, note: str = "", now: Optional[float] = None) -> str:
        """The text of the current state, e.g. ``lbfgs 3/10 examples  elapsed 0:12  ETA
        0:28``."""
        now = self._clock() if now is None else now
        elapsed = now - self.start
        k = int(math.floor(self.done + 1e-9))
        eta = elapsed / self.done * (self.total - self.done) if self.done > 0 else None
        head = f"{self.label} " if self.label else ""
        unit = f" {self.unit}" if self.unit else ""
        text = (f"{head}{k}/{self.total}{unit}  elapsed {format_duration(elapsed)}  "
                f"ETA {format_duration(eta)}")
        return f"{text}  {note}" if note else text

    def update(self, done: float, note: str = "") -> None:
        """Sets the work done to ``done`` units and prints a line if one is due."""
        done = min(max(float(done), 0.0), float(self.total))
        if self._last is not None and done >= self.total and self.done >= self.total:
            return  # the final line is printed once
        self.done = done
        now = self._clock()
        final = self.done >= self.total
        if not self.enabled or (not final and self._last is not None
                                and now - self._last < self.interval):
            return
        self._last = now
        self._write(self.line(note, now), final)

    def advance(self, n: float = 1, note: str = "") -> None:
        """Adds ``n`` units of work done."""
        self.update(self.done + n, note)

    def advance_note(self, note: str) -> None:
        """One unit done, described by ``note`` (a ``log(message)`` callback)."""
        self.advance(1, note)

    def __call__(self, done: float, total: Optional[float] = None, note: str = "") -> None:
        """Callback form: ``done`` of ``total`` (default: this object's total)."""
        scale = 1.0 if not total else self.total / float(total)
        self.update(done * scale, note)

    def sub(self, offset: float, width: float) -> ProgressFn:
        """A ``progress(done, total)`` callback for a sub-task that covers units
        ``[offset, offset + width)`` of this one (e.g. one batch of examples)."""
        def callback(done, total, note=""):
            self.update(offset + width * (float(done) / float(total) if total else 1.0), note)

        return callback

    def close(self) -> None:
        """Ends a redrawn terminal line (plain output needs nothing)."""
        if self._pending:
            self.stream.write("\n")
            self.stream.flush()
            self._pending = False

    def _write(self, text, final):
        out = self.stream
        if self.tty:
            pad = " " * max(0, self._width - len(text))
            self._width = len(text)
            out.write("\r" + text + pad + ("\n" if final else ""))
            self._pending = not final
        else:
            out.write(text + "\n")
        out.flush()
        self.lines += 1
