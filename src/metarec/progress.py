"""Progress of long steps: a redrawn bar on a terminal, plain lines anywhere else.

A tqdm bar redraws itself with carriage returns; captured in a CI log or ``make demo > log`` that
is hundreds of partial lines on one physical line. :func:`progress_bar` gives the bar when stderr
is a terminal and otherwise a :class:`PlainProgress` with the same calls (``update``,
``set_postfix``, ``set_postfix_str``, ``close``), which writes one whole line at each tenth of the
work, at most every ``every_seconds`` (and always the last).
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Protocol


class Progress(Protocol):
    """What the library calls on a progress display (tqdm's subset)."""

    def update(self, n: int = 1) -> Any: ...

    def set_postfix(self, refresh: bool = True, **values: Any) -> None: ...

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(self, *exc: object) -> Any: ...


class PlainProgress:
    """Whole lines: ``meta-train 30/300 (10%) 4 s elapsed, ETA 36 s, loss=0.6931``.

    Args:
        total: units of work.
        desc: what is progressing.
        initial: units already done (a resumed run).
        every_seconds: the least time between two lines (the last one is always written).
        stream: where to write (stderr by default, like tqdm).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        initial: int = 0,
        every_seconds: float = 5.0,
        stream: IO[str] | None = None,
    ) -> None:
        self.total, self.desc, self.n = total, desc, initial
        self.every_seconds = every_seconds
        self.stream = stream if stream is not None else sys.stderr
        self._postfix = ""
        self._started = time.monotonic()
        self._last_line = -float("inf")
        self._next_tenth = self._tenth(initial) + 1
        self._written_n = initial  # nothing new to say until the first update
        self._closed = False

    def _tenth(self, n: int) -> int:
        return 10 * n // max(1, self.total)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self._tenth(self.n) >= self._next_tenth and now - self._last_line >= self.every_seconds:
            self._write(now)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self._postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self._postfix = text

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self.n != self._written_n:
                self._write(time.monotonic())

    def _write(self, now: float) -> None:
        elapsed = now - self._started
        share = self.n / self.total if self.total else 1.0
        line = f"{self.desc} {self.n}/{self.total} ({share:.0%}) {elapsed:.0f} s elapsed"
        if 0 < share < 1:
            line += f", ETA {elapsed / share - elapsed:.0f} s"
        if self._postfix:
            line += f", {self._postfix}"
        print(line, file=self.stream, flush=True)
        self._last_line = now
        self._written_n = self.n
        self._next_tenth = self._tenth(self.n) + 1

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Silent:
    """No display at all (``progress=False``)."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress_bar(
    total: int,
    desc: str,
    *,
    enabled: bool = True,
    initial: int = 0,
    unit: str = "it",
    stream: IO[str] | None = None,
) -> Progress:
    """A tqdm bar when ``stream`` (stderr) is a terminal, plain lines otherwise, nothing when not
    ``enabled``."""
    if not enabled:
        return _Silent()
    stream = stream if stream is not None else sys.stderr
    if stream.isatty():
        from tqdm.auto import tqdm  # imported here: commands without progress skip it

        return tqdm(total=total, desc=desc, initial=initial, unit=unit, file=stream)
    return PlainProgress(total, desc, initial=initial, stream=stream)
