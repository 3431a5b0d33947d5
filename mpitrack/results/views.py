"""The typed SQL view of the results, generated from the feature registry.

``measurement_values`` has one row per measurement row and one typed column
per feature people filter on (``fwhm_eta``, ``intensity``, ...), so a query
says ``WHERE fwhm_eta > 5`` instead of ``(features -> 'fwhm' ->> 'eta')::float8
> 5``. It is a plain view: the column expressions are the JSONB paths, so a
filter on region_id or scan_number still uses the measurements indexes, and an
expression index on a JSONB path (as ``CREATE INDEX ... ((features -> 'fwhm'
->> 'eta')::float8)``) serves a filter on its column.

Column names carry the experiment's axis names, which only the config knows
(JSONB does not keep key order): the axes live in the table ``result_axes``
(migration 004) and the view is re-created when they change. store.apply_schema
calls `ensure_views`, so every experiment's schema has the view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from mpitrack.results.keys import FEATURES, PHYSICAL_PARTS, FeatureSpec, feature

VIEW = "measurement_values"
DEFAULT_AXES = ("omega", "eta", "tth")
# The measurements columns the view starts with, as they are.
BASE_COLUMNS = ("region_id", "track_id", "scan_number", "detected", "overlapping")


@dataclass(frozen=True)
class ViewColumn:
    """A typed column of the view: its name, SQL type, unit and where it comes from."""

    name: str
    sql_type: str
    unit: str
    expression: str
    meaning: str


def _literal(text: str) -> str:
    """A SQL string literal of a name already checked to be a plain identifier-like word."""
    return "'" + text.replace("'", "''") + "'"


def _cast(path: str, sql_type: str) -> str:
    if sql_type == "boolean":
        return f"coalesce(({path})::boolean, false)"
    return f"({path})::{sql_type}"


def view_columns(axes: Sequence[str]) -> list[ViewColumn]:
    """The view's typed columns for the axes (omega first), in order."""
    axes = check_axes(axes)
    out = []
    for name in BASE_COLUMNS:
        out.append(ViewColumn(name, "", "", f"m.{name}", "as in measurements"))
    for spec in FEATURES:
        if spec.view_type is None:
            continue
        out.extend(_feature_columns(spec, axes))
    physical = feature("physical")
    for part in PHYSICAL_PARTS:
        for axis in axes:
            out.append(
                ViewColumn(
                    f"physical_{part}_{axis}",
                    "double precision",
                    physical.unit,
                    _cast(
                        f"m.features -> 'physical' -> {_literal(part)} ->> {_literal(axis)}",
                        "double precision",
                    ),
                    f"{part} along {axis} in degrees (NULL without a geometry)",
                )
            )
    out.append(ViewColumn("features", "jsonb", "", "m.features", "every feature, as stored"))
    return out


def _feature_columns(spec: FeatureSpec, axes: Sequence[str]) -> list[ViewColumn]:
    assert spec.view_type is not None
    key = _literal(spec.key)
    if not spec.per_axis:
        return [
            ViewColumn(
                spec.key,
                spec.view_type,
                spec.unit,
                _cast(f"m.features ->> {key}", spec.view_type),
                spec.meaning,
            )
        ]
    return [
        ViewColumn(
            f"{spec.key}_{axis}",
            spec.view_type,
            spec.unit,
            _cast(f"m.features -> {key} ->> {_literal(axis)}", spec.view_type),
            f"{spec.key} along {axis}",
        )
        for axis in axes
    ]


def check_axes(axes: Sequence[str]) -> tuple[str, str, str]:
    """("omega", axis1, axis2) with names fit for column names (letters, digits, _)."""
    axes = tuple(axes)
    if len(axes) == 2:
        axes = ("omega", *axes)
    if len(axes) != 3 or axes[0] != "omega" or len(set(axes)) != 3:
        raise ValueError(f"axes must be omega and two other distinct names, got {axes!r}")
    for name in axes:
        if not (name.replace("_", "a").isalnum() and name.isascii() and name[0].isalpha()):
            raise ValueError(f"axis name {name!r} is not a plain name (letters, digits, _)")
    return axes  # type: ignore[return-value]


def view_sql(axes: Sequence[str]) -> str:
    """The CREATE VIEW statement for the axes (what docs/results.md shows)."""
    body = ",\n       ".join(f"{c.expression} AS {c.name}" for c in view_columns(axes))
    return f"CREATE VIEW {VIEW} AS\nSELECT {body}\nFROM measurements m"


def _signature(statement: str) -> str:
    return "mpitrack " + hashlib.sha256(statement.encode()).hexdigest()[:16]


def stored_axes(conn: psycopg.Connection) -> tuple[str, ...] | None:
    rows = conn.execute("SELECT name FROM result_axes ORDER BY axis_index").fetchall()
    return tuple(str(r[0]) for r in rows) or None


def _inferred_axes(conn: psycopg.Connection) -> tuple[str, str, str]:
    """Axes from one stored detection (sorted: JSONB keeps no order), else the defaults."""
    row = conn.execute(
        "SELECT features -> 'position' FROM measurements WHERE detected LIMIT 1"
    ).fetchone()
    if not row or not isinstance(row[0], dict) or "omega" not in row[0] or len(row[0]) != 3:
        return DEFAULT_AXES
    return check_axes(("omega", *sorted(k for k in row[0] if k != "omega")))


def ensure_views(conn: psycopg.Connection, axes: Sequence[str] | None = None) -> tuple[str, ...]:
    """Record the axes (when given) and (re)create the view if its SQL changed; the axes.

    Without axes the recorded ones are kept; with none recorded yet they are
    inferred from the stored rows, else the defaults (omega, eta, tth). Runs
    inside store.apply_schema's transaction and advisory lock.
    """
    wanted = check_axes(axes) if axes is not None else None
    current = stored_axes(conn)
    if wanted is None:
        wanted = check_axes(current) if current else _inferred_axes(conn)
    if current != wanted:
        conn.execute("DELETE FROM result_axes")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO result_axes (axis_index, name) VALUES (%s, %s)",
                list(enumerate(wanted)),
            )
    statement = view_sql(wanted)
    signature = _signature(statement)
    row = conn.execute("SELECT obj_description(to_regclass(%s), 'pg_class')", (VIEW,)).fetchone()
    if row is None or row[0] != signature:
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(VIEW)))
        conn.execute(statement)  # type: ignore[arg-type]  # built from checked names only
        conn.execute(
            sql.SQL("COMMENT ON VIEW {} IS {}").format(sql.Identifier(VIEW), sql.Literal(signature))
        )
    return wanted
