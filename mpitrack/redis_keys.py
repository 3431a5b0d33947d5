"""Every Redis key mpitrack uses, in one place: the layout of one run's keys.

All keys of a run live under ``mpitrack:{run}:``, so several experiments can
share one server. Values are JSON or decimal text; nothing is ever pickled.

The frame registry (registry.py; ``mpitrack run`` and ``mpitrack listen``):

- ``frames:{region}:{scan}`` (set): registered frame numbers.
- ``frame_sets`` (set): every ``"{region}:{scan}"`` that has a frames set.
- ``frame_changes`` (stream): one entry per registration batch.
- ``stop`` (string ``"1"``): a stop request (``mpitrack stop``).

Separate-process mode (transport/redis_streams.py; docs/process-mode.md):

- ``jobs`` (stream, consumer group `GROUP`): the jobs handed out.
- ``jobs:attempts`` (hash): dispatch id -> attempts started.
- ``jobs:dead`` (stream): jobs given up.
- ``events`` (stream): job reports and ``scan_complete`` announcements.
- ``events:announced`` (string): how many ``scan_complete`` entries the
  dispatcher has added to ``events``.
- ``dispatcher`` (string): the epoch of the dispatcher that owns the run.
- ``finished`` (string, expires): that epoch once the run is over.

What each key holds and who writes it is documented with its user; this
module only names the keys, so a key is spelled in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The consumer group of the ``jobs`` stream that every worker process joins.
GROUP = "workers"


@dataclass(frozen=True)
class RedisKeys:
    """The Redis keys of run ``run`` (a non-empty name without whitespace)."""

    run: str

    def __post_init__(self) -> None:
        if not self.run or any(c.isspace() for c in self.run):
            raise ValueError(f"run name must be non-empty without whitespace, got {self.run!r}")

    @property
    def prefix(self) -> str:
        return f"mpitrack:{self.run}:"

    # The frame registry.

    def frames(self, region: int, scan: int) -> str:
        return f"{self.prefix}frames:{region}:{scan}"

    @property
    def frame_sets(self) -> str:
        return self.prefix + "frame_sets"

    @property
    def frame_changes(self) -> str:
        return self.prefix + "frame_changes"

    @property
    def stop(self) -> str:
        return self.prefix + "stop"

    # Separate-process mode.

    @property
    def jobs(self) -> str:
        return self.prefix + "jobs"

    @property
    def attempts(self) -> str:
        return self.prefix + "jobs:attempts"

    @property
    def dead(self) -> str:
        return self.prefix + "jobs:dead"

    @property
    def events(self) -> str:
        return self.prefix + "events"

    @property
    def announced(self) -> str:
        return self.prefix + "events:announced"

    @property
    def dispatcher(self) -> str:
        return self.prefix + "dispatcher"

    @property
    def finished(self) -> str:
        return self.prefix + "finished"
