"""`mpitrack export`: an experiment's measurements to CSV, Parquet or HDF5, streamed.

Every format reads the typed view (views.py) in (region, scan, track) order
and never holds more than one batch: CSV through the server's COPY (the
server formats the text, the client only copies bytes to the file), Parquet
and HDF5 through read.py's binary COPY, a batch of column arrays at a time.
The file is written under a temporary name and renamed when complete, so a
reader never sees half an export.

HDF5 layout: one group per region (``region_0012``) holding one dataset per
column (track_id, scan_number, detected, ..., fwhm_eta, ...), each with
``unit`` and ``meaning`` attributes; the file's attributes name the
experiment, the axes and the selection. Parquet keeps the same columns, with
the units in each field's metadata.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from mpitrack.results.read import (
    BATCH_ROWS,
    Selection,
    axes_of,
    count_rows,
    dtype_of,
    read_batches,
    value_columns,
)
from mpitrack.results.views import VIEW, ViewColumn

log = logging.getLogger(__name__)

FORMATS = ("csv", "parquet", "hdf5")
PROGRESS_SECONDS = 2.0


@dataclass(frozen=True)
class ExportSummary:
    rows: int
    seconds: float
    path: Path


def export(
    conn: psycopg.Connection,
    fmt: str,
    out: Path,
    selection: Selection | None = None,
    batch_rows: int = BATCH_ROWS,
) -> ExportSummary:
    """Write the selected measurements of the connection's experiment to ``out``."""
    selection = selection or Selection()
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    start = time.monotonic()
    axes = axes_of(conn)
    columns = value_columns(axes)
    total = count_rows(conn, selection)
    conn.commit()
    log.info("exporting %d rows to %s (%s)", total, out, fmt)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if fmt == "csv":
            rows = _write_csv(conn, selection, columns, tmp, total)
        else:
            batches = read_batches(conn, selection, columns, batch_rows, PROGRESS_SECONDS, total)
            writer = _write_parquet if fmt == "parquet" else _write_hdf5
            attrs = {"experiment": _experiment(conn), "axes": list(axes), **_attrs(selection)}
            rows = writer(batches, columns, tmp, attrs)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    seconds = time.monotonic() - start
    log.info("exported %d rows to %s in %.1f s", rows, out, seconds)
    return ExportSummary(rows, seconds, out)


def _experiment(conn: psycopg.Connection) -> str:
    from mpitrack.store import experiment_of

    name = experiment_of(conn)
    conn.commit()
    return name


def _attrs(selection: Selection) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if selection.regions is not None:
        out["regions"] = list(selection.regions)
    if selection.first_scan is not None:
        out["first_scan"] = selection.first_scan
    if selection.last_scan is not None:
        out["last_scan"] = selection.last_scan
    return out


def _write_csv(
    conn: psycopg.Connection,
    selection: Selection,
    columns: Sequence[ViewColumn],
    path: Path,
    total: int,
) -> int:
    where, params = selection.where()
    query = (
        sql.SQL("COPY (SELECT ")
        + sql.SQL(", ").join(_csv_column(c) for c in columns)
        + sql.SQL(" FROM {}").format(sql.Identifier(VIEW))
        + where
        + sql.SQL(" ORDER BY region_id, scan_number, track_id) TO STDOUT WITH (FORMAT csv, HEADER)")
    )
    rows = -1  # the header line
    last_log = time.monotonic()
    conn.rollback()
    with conn.transaction(), path.open("wb") as fh, conn.cursor() as cur:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # psycopg binds COPY's parameters client-side (the server takes none).
        with cur.copy(query, params) as copy:
            for chunk in copy:
                fh.write(chunk)
                rows += bytes(chunk).count(b"\n")
                now = time.monotonic()
                if now - last_log >= PROGRESS_SECONDS:
                    last_log = now
                    log.info(
                        "wrote %d of %d rows (%.0f %%)", rows, total, 100 * rows / max(total, 1)
                    )
    return max(rows, 0)


def _csv_column(column: ViewColumn) -> sql.Composable:
    """Booleans as true/false (COPY writes t/f, which pandas and numpy read as text)."""
    name = sql.Identifier(column.name)
    if dtype_of(column) is np.bool_:
        return sql.SQL("{}::text AS {}").format(name, name)
    return name


def _write_parquet(
    batches: Iterator[dict[str, np.ndarray]],
    columns: Sequence[ViewColumn],
    path: Path,
    attrs: dict[str, Any],
) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        from mpitrack.errors import UsageError

        raise UsageError("Parquet export needs pyarrow: pip install 'mpitrack[results]'") from None
    import json

    fields = [
        pa.field(
            c.name,
            pa.from_numpy_dtype(np.dtype(dtype_of(c))),
            metadata={"unit": c.unit, "meaning": c.meaning},
        )
        for c in columns
    ]
    schema = pa.schema(fields, metadata={"mpitrack": json.dumps(attrs)})
    rows = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in batches:
            table = pa.Table.from_arrays([batch[c.name] for c in columns], schema=schema)
            writer.write_table(table)
            rows += table.num_rows
    return rows


def _write_hdf5(
    batches: Iterator[dict[str, np.ndarray]],
    columns: Sequence[ViewColumn],
    path: Path,
    attrs: dict[str, Any],
) -> int:
    import h5py

    stored = [c for c in columns if c.name != "region_id"]  # the group names the region
    rows = 0
    with h5py.File(path, "w") as h5:
        for key, value in attrs.items():
            h5.attrs[key] = value
        h5.attrs["layout"] = "one group per region (region_NNNN), one dataset per column"
        for batch in batches:
            regions = batch["region_id"]
            # Rows come in region order: cut the batch where the region changes.
            cuts = np.flatnonzero(np.diff(regions)) + 1
            for lo, hi in zip(
                np.concatenate([[0], cuts]), np.concatenate([cuts, [regions.size]]), strict=True
            ):
                group = _region_group(h5, int(regions[lo]), stored)
                n = int(hi - lo)
                for c in stored:
                    data = group[c.name]
                    size = data.shape[0]
                    data.resize(size + n, axis=0)
                    data[size:] = batch[c.name][lo:hi]
            rows += regions.size
    return rows


def _region_group(h5: Any, region: int, columns: Sequence[ViewColumn]) -> Any:
    name = f"region_{region:04d}"
    if name in h5:
        return h5[name]
    group = h5.create_group(name)
    group.attrs["region_id"] = region
    for c in columns:
        data = group.create_dataset(
            c.name,
            shape=(0,),
            maxshape=(None,),
            dtype=dtype_of(c),
            chunks=(16384,),
            compression="gzip",
            compression_opts=1,
            shuffle=True,
        )
        data.attrs["unit"] = c.unit
        data.attrs["meaning"] = c.meaning
    return group
