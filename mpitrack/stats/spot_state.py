"""What a region's spot page remembers between updates (``spots/state/<id>.json``).

Kept small on purpose, so an update costs the new scan's rows, not the run's:

- ``open``: the rows of the scans a later commit may still rewrite, each with
  the decision first shown for it (revision marks need the history, the
  database keeps only the current answer);
- ``final``: every older row folded into the look-first tally;
- ``cells``: the finished HTML cells of final rows, for the page blocks an
  update may still rewrite (the newest block and the one holding the oldest
  open scan); older blocks' pages are written and left alone;
- ``layout``: the region's sheet layout, so sheets on disk need not be read back.

A state of another format version is dropped: the next update reads the
region's rows afresh and rebuilds it (only revision marks of its open scans
are lost).
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mpitrack.stats.lookfirst import RegionTally
from mpitrack.stats.spotrows import ShownRow
from mpitrack.stats.strips import SheetLayout

log = logging.getLogger(__name__)

VERSION = 2


@dataclass
class RegionState:
    seen_through: int | None = None  # the newest scan the page has shown
    open_from: int | None = None  # rows of scans >= it are in `open`, older ones in `final`
    final: RegionTally = field(default_factory=RegionTally)
    open: dict[tuple[int, int], ShownRow] = field(default_factory=dict)  # (scan, track)
    cells: dict[int, dict[int, str]] = field(default_factory=dict)  # scan -> track -> <td>
    layout: SheetLayout | None = None
    other_layouts: dict[int, SheetLayout] = field(default_factory=dict)  # scans that differ
    missing: dict[int, str] = field(default_factory=dict)  # scans without a sheet: why
    newest_block: int | None = None  # first scan of the block region_<id>.html shows
    pages: list[int] = field(default_factory=list)  # first scans of the blocks with a page
    newest_sheet: int | None = None

    def layout_of(self, scan: int) -> SheetLayout | None:
        if scan in self.missing:
            return None
        return self.other_layouts.get(scan, self.layout)

    def to_json(self) -> dict:
        def layout(v: SheetLayout | None) -> list | None:
            return None if v is None else [v.n_omega, v.n1, v.n2, v.scale]

        return {
            "version": VERSION,
            "seen_through": self.seen_through,
            "open_from": self.open_from,
            "final": self.final.to_json(),
            "open": [s.to_json() for s in self.open.values()],
            "cells": {str(s): {str(t): c for t, c in row.items()} for s, row in self.cells.items()},
            "layout": layout(self.layout),
            "other_layouts": {str(s): layout(v) for s, v in self.other_layouts.items()},
            "missing": {str(s): why for s, why in self.missing.items()},
            "newest_block": self.newest_block,
            "pages": self.pages,
            "newest_sheet": self.newest_sheet,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> RegionState:
        if data.get("version") != VERSION:
            return cls()
        shown = [ShownRow.from_json(item) for item in data["open"]]
        return cls(
            seen_through=data["seen_through"],
            open_from=data["open_from"],
            final=RegionTally.from_json(data["final"]),
            open={(s.row.scan, s.row.track): s for s in shown},
            cells={int(s): {int(t): c for t, c in r.items()} for s, r in data["cells"].items()},
            layout=None if data["layout"] is None else SheetLayout(*data["layout"]),
            other_layouts={int(s): SheetLayout(*v) for s, v in data["other_layouts"].items()},
            missing={int(s): str(why) for s, why in data["missing"].items()},
            newest_block=data["newest_block"],
            pages=[int(p) for p in data["pages"]],
            newest_sheet=data["newest_sheet"],
        )

    @classmethod
    def load(cls, path: Path, region: int) -> RegionState:
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return cls()
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("spot state of region %d unreadable (%s): rebuilt", region, exc)
            return cls()

    def save(self, path: Path) -> None:
        """Overwrite the state file in place.

        Not atomic on purpose: replacing a file by rename (or truncating it to
        zero) makes ext4 flush the new data at once, 1-3 ms a file, the largest
        cost of an update; an in-place rewrite costs 0.02 ms. Only this role
        reads the file, and a state torn by a crash fails to parse and is
        rebuilt from the database (`load`).
        """
        data = json.dumps(self.to_json(), separators=(",", ":")).encode()
        try:
            with path.open("r+b") as stream:
                stream.write(data)
                stream.truncate()
        except FileNotFoundError:
            path.write_bytes(data)


def png_layout(path: Path, n_omega: int, scale: int) -> SheetLayout | None:
    """The layout of a sheet written before, from its PNG header (None if it does not fit)."""
    try:
        with path.open("rb") as stream:
            head = stream.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    n2, rest = divmod(width, (n_omega + 1) * scale)
    n1, rest1 = divmod(height, scale)
    if rest or rest1 or n1 < 1 or n2 < 1:
        return None
    return SheetLayout(n_omega, n1, n2, scale)
