"""Progress lines for long work: done/total, rate, ETA. Batch logs are not terminals,
so progress is a log line every few seconds, never a carriage-return bar."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@dataclass
class Progress:
    """Counts work done and logs a summary line at most every ``interval`` seconds.

    total None means open-ended (follow mode): no percentage, no ETA.
    """

    label: str
    total: int | None
    logger: logging.Logger
    interval: float = 5.0
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)
    _last_log: float = field(default=0.0, init=False)

    def advance(self, ok: bool = True) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1

    def rate(self, now: float | None = None) -> float:
        elapsed = (time.monotonic() if now is None else now) - self.started
        return (self.done + self.failed) / elapsed if elapsed > 0 else 0.0

    def line(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        finished = self.done + self.failed
        rate = self.rate(now)
        parts = [f"{self.label} {finished}" + (f"/{self.total}" if self.total is not None else "")]
        if self.total:
            parts[0] += f" ({100.0 * finished / self.total:.0f}%)"
        parts.append(f"{self.failed} failed")
        parts.append(f"{rate:.1f}/s")
        if self.total is not None and rate > 0:
            parts.append(f"ETA {format_duration((self.total - finished) / rate)}")
        parts.append(f"elapsed {format_duration(now - self.started)}")
        return ", ".join(parts)

    def maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_log >= self.interval:
            self._last_log = now
            self.logger.info("%s", self.line(now))
