"""A progress bar for long work, on stderr, with no dependency.

On a terminal it redraws one line; in a log (CI, a pipe) it prints a line at every tenth of
the way, so that logs stay short.

Examples
--------
>>> with Progress(3, "demo", stream=None) as bar:
...     for _ in range(3):
...         bar.update()
>>> bar.done
3
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    def __init__(
        self,
        total: int | None,
        desc: str = "",
        unit: str = "it",
        stream: TextIO | None = sys.stderr,
    ):
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.done = 0
        self._start = time.perf_counter()
        self._tty = bool(stream) and hasattr(stream, "isatty") and stream.isatty()
        self._last_tenth = -1

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.stream and self._tty:
            self.stream.write("\n")
            self.stream.flush()

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        if not self.stream:
            return
        elapsed = time.perf_counter() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(frac * 20)
            line = (
                f"{self.desc} [{bar:<20}] {self.done}/{self.total} {self.unit} "
                f"{elapsed:.1f}s {rate:.1f} {self.unit}/s {note}"
            )
            tenth = int(frac * 10)
        else:
            line = f"{self.desc} {self.done} {self.unit} {elapsed:.1f}s {note}"
            tenth = self._last_tenth + 1 if self.done % 100 == 0 else self._last_tenth
        if self._tty:
            self.stream.write("\r" + line.rstrip()[:150])
            self.stream.flush()
        elif tenth > self._last_tenth:
            self._last_tenth = tenth
            self.stream.write(line.rstrip() + "\n")
            self.stream.flush()
