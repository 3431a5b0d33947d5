"""Per-region sums of a number the workers report per job, read from the job log.

The dispatcher writes one JSON line per finished job to
``<workdir>/logs/jobs.jsonl`` (`roles/dispatcher.JobLog`). Counts that a
worker reports with its job (what detection rejected: fields `REJECTED`,
zingers and hot pixels) land on that line, so the report can rank regions by
it without a new table. The reader keeps its file offset and reads only the
lines added since the last call; a job that ran again (a retry) replaces its
earlier count, so nothing is counted twice. Lines it cannot parse are
skipped (the log is append-only; the last line may be half-written).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# The "done" line's fields with the job's rejected zingers and hot pixels
# (roles/worker.py reports them, transport/base.JobReport.rejected).
REJECTED = ("zingers", "hot_pixels")


class JobLogCounts:
    """Sums of ``fields`` over the "done" lines of a job log, per region."""

    def __init__(self, path: Path, fields: tuple[str, ...] = REJECTED) -> None:
        self.path = Path(path)
        self.fields = fields
        self._offset = 0
        self._per_job: dict[tuple[int, int], float] = {}
        self._totals: dict[int, float] = {}

    def totals(self) -> dict[int, float]:
        """Region -> sum over its jobs, after reading what was appended since the last call."""
        try:
            with self.path.open("rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return dict(self._totals)
        end = data.rfind(b"\n") + 1  # a last line without its newline is still being written
        self._offset += end
        for line in data[:end].splitlines():
            self._add(line)
        return dict(self._totals)

    def _add(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return
        if not isinstance(record, dict) or record.get("event") != "done":
            return
        values = [record.get(name) for name in self.fields]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if not numbers:
            return
        value = sum(numbers)
        try:
            key = (int(record["region"]), int(record["scan"]))
        except (KeyError, TypeError, ValueError):
            return
        previous = self._per_job.get(key, 0.0)
        if value == 0 and previous == 0:
            return  # kept per job only when non-zero: the log has a line per job of the run
        self._per_job[key] = float(value)
        self._totals[key[0]] = self._totals.get(key[0], 0.0) + float(value) - previous
