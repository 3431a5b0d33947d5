from __future__ import annotations

import logging

from mpitrack.progress import Progress, format_duration


def test_line_shows_counts_rate_and_eta() -> None:
    progress = Progress("jobs", total=100, logger=logging.getLogger("t"), started=0.0)
    for _ in range(9):
        progress.advance()
    progress.advance(ok=False)
    assert progress.line(now=5.0) == (
        "jobs 10/100 (10%), 1 failed, 2.0/s, ETA 0:00:45, elapsed 0:00:05"
    )


def test_open_ended_progress_has_no_eta() -> None:
    progress = Progress("jobs", total=None, logger=logging.getLogger("t"), started=0.0)
    progress.advance()
    assert progress.line(now=2.0) == "jobs 1, 0 failed, 0.5/s, elapsed 0:00:02"


def test_format_duration() -> None:
    assert format_duration(3725.4) == "1:02:05"
