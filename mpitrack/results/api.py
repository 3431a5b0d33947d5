"""The Python API: an experiment's tracks and measurements as DataFrames or arrays.

    import mpitrack.results
    with mpitrack.results.open("configs/demo.yaml") as res:
        widths = res.measurements(regions=[12], columns=["track_id", "scan_number", "fwhm_eta"])

`open` takes a config (its run is the experiment, its database the
database, an embedded server started if it names none) or a PostgreSQL URL
with the experiment named. Reads go through the typed view (views.py) in
one snapshot each; pandas is optional (the ``results`` extra), numpy
structured arrays need nothing more.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import psycopg

from mpitrack import store
from mpitrack.config import Config, load_config
from mpitrack.errors import UsageError
from mpitrack.results.read import Selection, axes_of, read_all, value_columns

Output = Literal["pandas", "numpy"]


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise UsageError(
            "pandas is not installed: pip install 'mpitrack[results]', or pass output='numpy'"
        ) from None
    return pandas


class Results:
    """One experiment's results on an open connection (see `open`)."""

    def __init__(
        self,
        conn: psycopg.Connection,
        experiment: str,
        n_scan: int | None = None,
        stack: contextlib.ExitStack | None = None,
    ) -> None:
        self.conn = conn
        self.experiment = experiment
        self.n_scan = n_scan
        self._stack = stack
        if stack is not None:
            # An embedded server started for this object: stop it at interpreter exit if
            # nobody called close() (a notebook, a script's last line). Left to the garbage
            # collector, the services generator would be finalised after module teardown.
            atexit.register(self.close)
        self.axes = axes_of(conn)
        conn.commit()

    def __enter__(self) -> Results:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection and stop the embedded server `open` started (idempotent)."""
        self.conn.close()
        if self._stack is not None:
            atexit.unregister(self.close)
            self._stack.close()
            self._stack = None

    def measurements(
        self,
        regions: Sequence[int] | None = None,
        scans: tuple[int | None, int | None] | None = None,
        tracks: Sequence[int] | None = None,
        *,
        detected_only: bool = False,
        columns: Sequence[str] | None = None,
        output: Output = "pandas",
    ) -> Any:
        """Rows of the view measurement_values, ordered (region, scan, track).

        scans: (first, last), inclusive; None at either end leaves it open.
        columns: a subset of the view's typed columns (docs/results.md); default all.
        Features a row lacks are NaN (integer features are floats for that reason).
        """
        first, last = scans if scans is not None else (None, None)
        selection = Selection(
            regions=None if regions is None else tuple(int(r) for r in regions),
            first_scan=first,
            last_scan=last,
            tracks=None if tracks is None else tuple(int(t) for t in tracks),
            detected_only=detected_only,
        )
        try:
            cols = value_columns(self.axes, columns)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        array = read_all(self.conn, selection, cols)
        return _pandas().DataFrame(array) if output == "pandas" else array

    def trajectory(self, region: int, track: int, output: Output = "pandas") -> Any:
        """One track's rows in scan order: position per axis, widths, flags."""
        return self.measurements(regions=[region], tracks=[track], output=output)

    def tracks(self, regions: Sequence[int] | None = None, output: Output = "pandas") -> Any:
        """One row per track: first/last detected scan, rows, detections, overlapping rows."""
        return self.query(
            "SELECT t.region_id, t.track_id, t.first_detected_scan, t.last_detected_scan, "
            "min(m.scan_number) AS first_scan, max(m.scan_number) AS last_scan, "
            "count(m.*) AS n_rows, count(*) FILTER (WHERE m.detected) AS n_detected, "
            "count(*) FILTER (WHERE m.overlapping) AS n_overlapping "
            "FROM tracks t LEFT JOIN measurements m USING (region_id, track_id) "
            "WHERE %(regions)s::integer[] IS NULL OR t.region_id = ANY(%(regions)s) "
            "GROUP BY t.region_id, t.track_id ORDER BY t.region_id, t.track_id",
            {"regions": None if regions is None else [int(r) for r in regions]},
            output=output,
        )

    def final_scans(self, n_scan: int | None = None) -> dict[int, int]:
        """Per region, the last scan whose rows are final (docs/results.md, revision rule).

        n_scan: the tracking window (the config's tracking.n_scan, known when
        opened from a config). Rows of later scans may still be revised while
        the experiment runs.
        """
        window = n_scan if n_scan is not None else self.n_scan
        if window is None:
            raise UsageError("final_scans needs n_scan (the config's tracking.n_scan)")
        return {r: s - window + 1 for r, s in store.committed_scans(self.conn).items()}

    def query(self, text: str, params: Any = None, output: Output = "pandas") -> Any:
        """Any SQL (such as docs/results.md's examples) in the experiment's schema."""
        with self.conn.cursor() as cur:
            cur.execute(text, params)  # type: ignore[arg-type]  # the caller's own SQL
            names = [d.name for d in cur.description or []]
            rows = cur.fetchall()
        self.conn.commit()
        if output == "pandas":
            return _pandas().DataFrame.from_records(rows, columns=names)
        if not rows:
            return np.empty(0, dtype=[(n, object) for n in names])
        return np.rec.fromrecords([tuple(_plain(v) for v in r) for r in rows], names=names)


def _plain(value: Any) -> Any:
    """numpy has no Decimal type: numeric results become floats."""
    return float(value) if type(value).__name__ == "Decimal" else value


def open(  # mirrors the builtin on purpose: mpitrack.results.open(...)
    source: str | Path | Config,
    experiment: str | None = None,
    *,
    workdir: Path | None = None,
) -> Results:
    """An experiment's results.

    source: a Config, the path of a config file (a Path, or a name ending .yaml/.yml),
        or a PostgreSQL URL or DSN.
    experiment: the run name (its schema); default the config's run, else MPITRACK_RUN.
    With a config that names no database (and no MPITRACK_DATABASE_URL), the
    embedded server under its workdir (or ``workdir``) is started if it is not
    running and stopped by `Results.close`.
    """
    config: Config | None = None
    if isinstance(source, Config):
        config = source
    elif isinstance(source, Path) or str(source).endswith((".yaml", ".yml")):
        config = load_config(Path(source))
    stack = contextlib.ExitStack()
    if config is not None:
        experiment = experiment or config.run
        url = os.environ.get("MPITRACK_DATABASE_URL") or config.database.url
        if url is None:
            from mpitrack.services import resolved_services

            urls = stack.enter_context(
                resolved_services(workdir or config.workdir, None, None, need_redis=False)
            )
            url = urls.database_url
    else:
        url = str(source)
        experiment = experiment or os.environ.get("MPITRACK_RUN")
    if experiment is None:
        stack.close()
        raise UsageError("name the experiment: open(url, experiment='RUN') or set MPITRACK_RUN")
    assert url is not None
    try:
        conn = store.connect(url, experiment)
        if store.schema_version(conn) < 4:
            conn.close()
            raise UsageError(
                f"experiment {experiment!r} has no results schema (version 4+): "
                "run `mpitrack db init` for it"
            )
        n_scan = config.tracking.n_scan if config is not None else None
        return Results(conn, experiment, n_scan, stack)
    except BaseException:
        stack.close()
        raise
