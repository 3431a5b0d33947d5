"""Selections of result rows and their streaming read into numpy columns.

One reader serves the Python API and the exporters: it streams the typed
view (results/views.py) from the server as a binary COPY of packed records
and decodes it in batches, so memory is bounded by the batch, not the
table, and turns each batch into numpy arrays, one per column. Numbers that
a row lacks (a missed detection has no fwhm) come back as NaN; integer
features are read as floats for that reason, the measurements' own integer
and boolean columns keep their types.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg
from psycopg import sql

from mpitrack.results.views import VIEW, ViewColumn, stored_axes, view_columns

log = logging.getLogger(__name__)

BATCH_ROWS = 50_000
# numpy types of the view's columns, by SQL type; the base columns are NOT NULL.
_BASE_DTYPES = {
    "region_id": np.int32,
    "track_id": np.int32,
    "scan_number": np.int32,
    "detected": np.bool_,
    "overlapping": np.bool_,
}
_DTYPES = {"double precision": np.float64, "integer": np.float64, "boolean": np.bool_}


@dataclass(frozen=True)
class Selection:
    """Which rows: regions (None = all), an inclusive scan range (None = open end),
    tracks (None = all; with several regions, the ids of each), detected rows only."""

    regions: tuple[int, ...] | None = None
    first_scan: int | None = None
    last_scan: int | None = None
    tracks: tuple[int, ...] | None = None
    detected_only: bool = False

    def where(self) -> tuple[sql.Composable, dict[str, object]]:
        parts: list[sql.Composable] = []
        params: dict[str, object] = {}
        if self.regions is not None:
            parts.append(sql.SQL("region_id = ANY(%(regions)s)"))
            params["regions"] = list(self.regions)
        if self.first_scan is not None:
            parts.append(sql.SQL("scan_number >= %(first_scan)s"))
            params["first_scan"] = self.first_scan
        if self.last_scan is not None:
            parts.append(sql.SQL("scan_number <= %(last_scan)s"))
            params["last_scan"] = self.last_scan
        if self.tracks is not None:
            parts.append(sql.SQL("track_id = ANY(%(tracks)s)"))
            params["tracks"] = list(self.tracks)
        if self.detected_only:
            parts.append(sql.SQL("detected"))
        if not parts:
            return sql.SQL(""), params
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params


def parse_scans(text: str) -> tuple[int | None, int | None]:
    """'A:B' (inclusive), 'A:', ':B' or 'A' -> (first, last)."""
    match = re.fullmatch(r"\s*(\d*)\s*(?::\s*(\d*)\s*)?", text)
    if match is None or text.strip() in ("", ":"):
        raise ValueError(f"scans {text!r}: expected A:B (inclusive), A:, :B or A")
    first = int(match.group(1)) if match.group(1) else None
    if match.group(2) is None and ":" not in text:
        return first, first
    last = int(match.group(2)) if match.group(2) else None
    if first is not None and last is not None and last < first:
        raise ValueError(f"scans {text!r}: the last scan {last} is before the first {first}")
    return first, last


def parse_regions(text: str) -> tuple[int, ...]:
    """'3,5,7-9' -> (3, 5, 7, 8, 9)."""
    out: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise ValueError(f"regions {text!r}: expected ids and ranges such as 3,5,7-9")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) else lo
        if hi < lo:
            raise ValueError(f"regions {text!r}: range {lo}-{hi} is empty")
        out.extend(range(lo, hi + 1))
    return tuple(sorted(set(out)))


def axes_of(conn: psycopg.Connection) -> tuple[str, ...]:
    """The experiment's feature axes (omega first), as recorded by apply_schema."""
    axes = stored_axes(conn)
    if axes is None:
        raise ValueError("the experiment has no recorded axes: run `mpitrack db init` first")
    return axes


def value_columns(axes: Sequence[str], names: Sequence[str] | None = None) -> list[ViewColumn]:
    """The view's columns to read (all but the raw features JSONB), or those named."""
    every = [c for c in view_columns(axes) if c.name != "features"]
    if names is None:
        return every
    by_name = {c.name: c for c in every}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown columns {unknown}; the view has {sorted(by_name)}")
    return [by_name[n] for n in names]


def dtype_of(column: ViewColumn) -> type:
    return _BASE_DTYPES.get(column.name) or _DTYPES[column.sql_type]


def count_rows(conn: psycopg.Connection, selection: Selection) -> int:
    where, params = selection.where()
    row = conn.execute(sql.SQL("SELECT count(*) FROM measurements") + where, params).fetchone()
    return int(row[0]) if row else 0


# COPY's binary format (PostgreSQL docs, "COPY ... Binary Format"): a 19-byte
# header (signature, flags, extension length), then per row a 16-bit field
# count and per field a 32-bit length and the value, big-endian; a field
# count of -1 ends it.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = 19
_SEND = {
    np.int32: ("int4send", ">i4"),
    np.float64: ("float8send", ">f8"),
    np.bool_: ("boolsend", "?"),
}


def _packed_value(column: ViewColumn) -> sql.Composable:
    """The column's value in PostgreSQL's binary send form (fixed width: NULL is NaN)."""
    name = sql.Identifier(column.name)
    dtype = dtype_of(column)
    if dtype is np.float64:
        return sql.SQL("float8send(coalesce({}::float8, 'NaN'))").format(name)
    return sql.SQL("{}({})").format(sql.SQL(_SEND[dtype][0]), name)


def packed_query(selection: Selection, columns: Sequence[ViewColumn]) -> tuple[sql.Composed, dict]:
    """A binary COPY of the selected rows with one output row per (region, scan): a
    bytea of that scan's rows in track order, each row its columns' send forms
    back to back. Hundreds of rows per COPY message instead of one: the client's
    cost per message, not the server, bounded the read before (1.8x slower).
    No value may be NULL (a NULL would drop its whole row from string_agg): the
    numbers are NaN instead, and the view's booleans are never NULL."""
    where, params = selection.where()
    query = (
        sql.SQL("COPY (SELECT string_agg(")
        + sql.SQL(" || ").join(_packed_value(c) for c in columns)
        + sql.SQL(", ''::bytea ORDER BY track_id) FROM {}").format(sql.Identifier(VIEW))
        + where
        + sql.SQL(
            " GROUP BY region_id, scan_number ORDER BY region_id, scan_number) "
            "TO STDOUT (FORMAT binary)"
        )
    )
    return query, params


def _payloads(chunks: Iterator[bytes | memoryview]) -> Iterator[bytes]:
    """The bytea of every row of a one-column binary COPY stream."""
    buffer = bytearray()
    header = False
    for chunk in chunks:
        buffer += chunk
        if not header:
            if len(buffer) < _HEADER:
                continue
            if bytes(buffer[:11]) != _SIGNATURE:
                raise ValueError("binary COPY: bad signature")
            del buffer[: _HEADER + int.from_bytes(buffer[15:19], "big")]
            header = True
        while len(buffer) >= 2:
            fields = int.from_bytes(buffer[:2], "big", signed=True)
            if fields == -1:
                del buffer[:2]
                break
            if fields != 1:
                raise ValueError(f"binary COPY: {fields} fields, expected 1")
            if len(buffer) < 6:
                break
            size = int.from_bytes(buffer[2:6], "big", signed=True)
            if len(buffer) < 6 + size:
                break
            yield bytes(buffer[6 : 6 + size])
            del buffer[: 6 + size]
    if buffer:
        raise ValueError(f"binary COPY: {len(buffer)} bytes left after the end")


def read_batches(
    conn: psycopg.Connection,
    selection: Selection,
    columns: Sequence[ViewColumn],
    batch_rows: int = BATCH_ROWS,
    progress_every: float | None = None,
    total: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """The selected rows in (region, scan, track) order, about ``batch_rows`` at a
    time (whole scans of a region), as column arrays, in one read-only
    REPEATABLE READ snapshot (consistent while workers keep committing).

    The server streams them as a binary COPY of packed records (`packed_query`),
    which numpy decodes with np.frombuffer: no Python object per value, and
    never more than a batch in memory. (A named cursor fetching tuples took
    31-32 s and 443 MB for 10^6 rows, more than the export budget.)
    progress_every: log a progress line at most this often (seconds).
    """
    query, params = packed_query(selection, columns)
    dtypes = [dtype_of(c) for c in columns]
    record = np.dtype([(c.name, _SEND[d][1]) for c, d in zip(columns, dtypes, strict=True)])
    start = last_log = time.monotonic()
    done = 0
    pending: list[np.ndarray] = []
    n_pending = 0

    def batch() -> dict[str, np.ndarray]:
        rows = np.concatenate(pending)
        pending.clear()
        return {c.name: rows[c.name].astype(d) for c, d in zip(columns, dtypes, strict=True)}

    conn.rollback()
    with conn.transaction(), conn.cursor() as cur:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        with cur.copy(query, params) as copy:
            for payload in _payloads(iter(copy)):
                if len(payload) % record.itemsize:
                    raise ValueError("binary COPY: a packed scan is not whole records")
                pending.append(np.frombuffer(payload, dtype=record))
                n_pending += len(pending[-1])
                if n_pending >= batch_rows:
                    yield batch()
                    done, n_pending = done + n_pending, 0
                    now = time.monotonic()
                    if progress_every is not None and now - last_log >= progress_every:
                        last_log = now
                        share = f" of {total} ({100 * done / total:.0f} %)" if total else ""
                        log.info("read %d rows%s in %.1f s", done, share, now - start)
    if pending:
        yield batch()
        done += n_pending
    if progress_every is not None:
        log.info("read %d rows in %.1f s", done, time.monotonic() - start)


def read_all(
    conn: psycopg.Connection, selection: Selection, columns: Sequence[ViewColumn]
) -> np.ndarray:
    """Every selected row as one numpy structured array (for the API: it fits in memory)."""
    dtype = np.dtype([(c.name, dtype_of(c)) for c in columns])
    parts = []
    for batch in read_batches(conn, selection, columns):
        part = np.empty(len(next(iter(batch.values()))), dtype=dtype)
        for name, values in batch.items():
            part[name] = values
        parts.append(part)
    return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
