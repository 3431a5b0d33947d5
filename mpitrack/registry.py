"""The frame registry: which omega frames of each (region, scan) have arrived.

Rank 0's directory scanner and any external ``mpitrack listen`` process write to
it; the dispatcher reads it to decide which jobs are ready. Two implementations
share the `FrameRegistry` protocol: `MemoryRegistry` (single process, tests) and
`RedisRegistry` (shared between processes and hosts).

Change notifications. Polling every (region, scan) set each dispatcher loop would
cost O(regions x scans) round trips, so writers also publish *which* pairs
changed, and the dispatcher asks ``changed_since(cursor)`` once per loop: one
round trip that returns the pairs touched since its cursor, plus a new cursor.
``changed_since(None)`` returns every pair that has any frame (start-up, or a
cursor that is too old), so a dispatcher that (re)starts late loses nothing.
A returned pair means "look again", not "complete": the dispatcher then asks
``missing``/``is_complete`` for that pair only.

Redis keys, all under ``mpitrack:{run}:`` (named in redis_keys.py):

- ``frames:{region}:{scan}`` (set of frame numbers, decimal strings): the registry.
- ``frame_sets`` (set of ``"{region}:{scan}"``): every pair that has a frames set;
  the full answer for ``changed_since(None)`` without a SCAN of the key space.
- ``frame_changes`` (stream): one entry per ``add`` batch, field ``pairs`` =
  space-separated ``"{region}:{scan}"`` items; capped with approximate MAXLEN
  (default 10,000 entries). A cursor is the ID of the last entry read. If that
  entry has been trimmed away, the reader resynchronises from ``frame_sets``.
  (Known gap: a cursor taken while the stream was empty is ``0-0``, and more than
  MAXLEN batches arriving before the next read would go unnoticed.)
- ``stop`` (string ``"1"``): a stop request for follow mode.

A Redis restart without persistence loses the registry. `forgot` says so once
(an add found ``frame_sets`` gone after earlier adds, or a reader's cursor is
gone from ``frame_changes``); rank 0 and `mpitrack listen` then register every
frame on disk again.

Every ``add`` is one MULTI/EXEC round trip whatever the batch size; ``missing``
is one SMISMEMBER (Redis >= 6.2). Values are plain decimal strings; nothing is
ever pickled. Redis errors (e.g. ``redis.exceptions.ConnectionError``) propagate:
retrying is the caller's policy.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mpitrack.frames import FrameKey
from mpitrack.redis_keys import RedisKeys

if TYPE_CHECKING:
    import redis

log = logging.getLogger(__name__)

Pair = tuple[int, int]

_STREAM_ID = re.compile(r"\d+-\d+")


@runtime_checkable
class FrameRegistry(Protocol):
    """What the scanner/listener write and the dispatcher reads."""

    def add(self, keys: Iterable[FrameKey]) -> None:
        """Register frames (idempotent); one round trip per call."""
        ...

    def frames(self, region: int, scan: int) -> set[int]:
        """Frame numbers registered for (region, scan)."""
        ...

    def missing(self, region: int, scan: int, window: Sequence[int]) -> list[int]:
        """Frames of ``window`` not yet registered, in window order."""
        ...

    def is_complete(self, region: int, scan: int, window: Sequence[int]) -> bool:
        """True when every frame of ``window`` is registered."""
        ...

    def changed_since(self, cursor: str | None) -> tuple[list[Pair], str]:
        """(region, scan) pairs changed after ``cursor`` (all pairs for None), new cursor."""
        ...

    def request_stop(self) -> None:
        """Ask follow-mode runs to finish in-flight work and exit."""
        ...

    def stop_requested(self) -> bool: ...

    def clear_stop(self) -> None:
        """Withdraw a stop request (a new run must not inherit an old one)."""
        ...

    def forgot(self) -> bool:
        """Whether the store lost registrations since the last call (a Redis restart
        without persistence); whoever registered frames must register them again."""
        ...


def _group(keys: Iterable[FrameKey]) -> dict[Pair, set[int]]:
    grouped: dict[Pair, set[int]] = defaultdict(set)
    for key in keys:
        grouped[(int(key.region), int(key.scan))].add(int(key.frame))
    return grouped


class MemoryRegistry:
    """In-process registry (size-1 runs and tests); thread-safe.

    Cursors are decimal indexes into an append-only log of changed pairs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames: dict[Pair, set[int]] = {}
        self._log: list[Pair] = []
        self._stop = False

    def add(self, keys: Iterable[FrameKey]) -> None:
        grouped = _group(keys)
        with self._lock:
            for pair, frames in grouped.items():
                self._frames.setdefault(pair, set()).update(frames)
                self._log.append(pair)

    def frames(self, region: int, scan: int) -> set[int]:
        with self._lock:
            return set(self._frames.get((region, scan), ()))

    def missing(self, region: int, scan: int, window: Sequence[int]) -> list[int]:
        with self._lock:
            have = self._frames.get((region, scan), set())
            return [f for f in window if f not in have]

    def is_complete(self, region: int, scan: int, window: Sequence[int]) -> bool:
        return not self.missing(region, scan, window)

    def changed_since(self, cursor: str | None) -> tuple[list[Pair], str]:
        with self._lock:
            end = len(self._log)
            start = _int_or_none(cursor)
            if start is None or not 0 <= start <= end:
                return sorted(self._frames), str(end)
            return sorted(set(self._log[start:])), str(end)

    def request_stop(self) -> None:
        self._stop = True

    def stop_requested(self) -> bool:
        return self._stop

    def clear_stop(self) -> None:
        self._stop = False

    def forgot(self) -> bool:
        return False


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_pairs(items: Iterable[bytes | str]) -> set[Pair]:
    pairs: set[Pair] = set()
    for item in items:
        region, _, scan = _str(item).partition(":")
        pairs.add((int(region), int(scan)))
    return pairs


class RedisRegistry:
    """Registry shared through Redis; keys are documented in the module docstring.

    Works with clients created with or without ``decode_responses``.
    """

    def __init__(self, client: redis.Redis, run: str, *, max_changes: int = 10_000) -> None:
        self.client = client
        self.run = run
        self.keys = RedisKeys(run)
        self.max_changes = max_changes
        self._sets_key = self.keys.frame_sets
        self._changes_key = self.keys.frame_changes
        self._stop_key = self.keys.stop
        self._forgot = False
        self._added = False

    def add(self, keys: Iterable[FrameKey]) -> None:
        grouped = _group(keys)
        if not grouped:
            return
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(self._sets_key)  # gone after an earlier add: Redis lost the registry
        for (region, scan), frames in grouped.items():
            pipe.sadd(self.keys.frames(region, scan), *sorted(frames))
        labels = [f"{region}:{scan}" for region, scan in sorted(grouped)]
        pipe.sadd(self._sets_key, *labels)
        pipe.xadd(
            self._changes_key,
            {"pairs": " ".join(labels)},
            maxlen=self.max_changes,
            approximate=True,
        )
        had_sets = pipe.execute()[0]
        if self._added and not had_sets:
            log.warning("the frame registry of run %s is gone (Redis restarted?)", self.run)
            self._forgot = True
        self._added = True

    def frames(self, region: int, scan: int) -> set[int]:
        return {int(f) for f in self.client.smembers(self.keys.frames(region, scan))}

    def missing(self, region: int, scan: int, window: Sequence[int]) -> list[int]:
        window = list(window)
        if not window:
            return []
        present = self.client.smismember(self.keys.frames(region, scan), window)
        return [f for f, ok in zip(window, present, strict=True) if not ok]

    def is_complete(self, region: int, scan: int, window: Sequence[int]) -> bool:
        return not self.missing(region, scan, window)

    def changed_since(self, cursor: str | None) -> tuple[list[Pair], str]:
        if cursor == "0-0":
            # Taken from an empty stream: everything in it now is new.
            return self._collect(self.client.xrange(self._changes_key), cursor)
        if cursor is not None and _STREAM_ID.fullmatch(cursor):
            pipe = self.client.pipeline(transaction=True)
            pipe.xrange(self._changes_key, min=cursor, max=cursor, count=1)
            pipe.xrange(self._changes_key, min=f"({cursor}", max="+")
            anchor, entries = pipe.execute()
            if anchor:
                return self._collect(entries, cursor)
            log.warning(
                "registry cursor %s is no longer in %s (trimmed, or Redis restarted without "
                "its data); resynchronising",
                cursor,
                self._changes_key,
            )
            self._forgot = True
        elif cursor is not None:
            log.warning("invalid registry cursor %r; resynchronising", cursor)
        pipe = self.client.pipeline(transaction=True)
        pipe.xrevrange(self._changes_key, max="+", min="-", count=1)
        pipe.smembers(self._sets_key)
        last, members = pipe.execute()
        new_cursor = _str(last[0][0]) if last else "0-0"
        return sorted(_parse_pairs(members)), new_cursor

    @staticmethod
    def _collect(entries: list, cursor: str) -> tuple[list[Pair], str]:
        pairs: set[Pair] = set()
        for _id, fields in entries:
            text = fields.get("pairs", fields.get(b"pairs", ""))
            pairs |= _parse_pairs(_str(text).split())
        new_cursor = _str(entries[-1][0]) if entries else cursor
        return sorted(pairs), new_cursor

    def request_stop(self) -> None:
        self.client.set(self._stop_key, "1")

    def stop_requested(self) -> bool:
        return bool(self.client.exists(self._stop_key))

    def clear_stop(self) -> None:
        self.client.delete(self._stop_key)

    def forgot(self) -> bool:
        """True once after Redis lost registrations: an `add` found the registry gone
        although this registry had added to it before (checked in the add's own
        transaction, so an add racing a restart is caught), or `changed_since` found
        its cursor gone from the stream (lost, or trimmed past the cursor)."""
        forgot, self._forgot = self._forgot, False
        return forgot
