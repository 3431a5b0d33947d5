"""`mpitrack evaluate`: score tracker output against a synthetic experiment's ground truth."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from mpitrack.cli.common import add_run_argument
from mpitrack.errors import UsageError
from mpitrack.evaluate import (
    DEFAULT_ZERO_DISTANCE,
    EvaluationError,
    check_match,
    evaluate,
    format_table,
    read_database,
    read_export,
)
from mpitrack.sim.truth import TruthError, read_truth

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score tracker output against ground truth (HOTA, IDF1, MOTA, ...)",
        description=(
            "Score tracker output against the ground truth written by `mpitrack simulate`: "
            "HOTA (point similarity, alpha-averaged), DetA, AssA, LocA, IDF1, MOTA, ID "
            "switches, fragmentations, localisation RMSE and precision/recall of the "
            "overlapping flag, per scenario and overall. Tracker output comes from the "
            "database's measurements table (default) or from a JSON-lines export file "
            "(--input, e.g. from `mpitrack baseline`). Only detected rows count. The ground "
            "truth must match the run (regions, scans, frame shape), else exit code 2. "
            "Definitions: docstring of mpitrack/evaluate.py."
        ),
        epilog=(
            "Examples: mpitrack evaluate --config data/demo/experiment.yaml (database, truth "
            "next to the config); mpitrack evaluate --truth data/demo/truth.json --input "
            "baseline.jsonl --json scores.json"
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help="experiment config: its database, and a check that the truth matches it",
    )
    p.add_argument(
        "--truth",
        type=Path,
        metavar="FILE",
        help="ground-truth file (default: truth.json next to the config)",
    )
    p.add_argument(
        "--input",
        type=Path,
        metavar="FILE",
        help="tracker output as JSON lines instead of the database",
    )
    p.add_argument(
        "--database-url",
        "--database",
        dest="database_url",
        metavar="URL",
        help="PostgreSQL URL (default: MPITRACK_DATABASE_URL, then the config's "
        "database.url, then the embedded server under the config's workdir)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="work directory of the embedded server (default: the config's workdir)",
    )
    add_run_argument(p)
    p.add_argument(
        "--zero-distance",
        type=float,
        default=DEFAULT_ZERO_DISTANCE,
        metavar="VOXELS",
        help="distance at which the point similarity reaches 0; "
        "CLEAR and ID matches need half of it",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the scores as JSON")
    p.set_defaults(handler=run)


def _load_tracked(args: argparse.Namespace, axes: tuple[str, ...], config):
    if args.input is not None:
        return read_export(args.input, axes)
    from mpitrack import store
    from mpitrack.cli.common import experiment_name, workdir_and_database
    from mpitrack.services import resolved_services

    experiment = experiment_name(args)
    if experiment is None:
        raise UsageError("reading the database needs the experiment: give --config or --run")
    workdir, url = workdir_and_database(args)
    retries = config.runtime.connect_retries if config is not None else 5
    with resolved_services(workdir, url, None, need_redis=False) as urls:
        assert urls.database_url is not None
        conn = store.connect(urls.database_url, experiment, retries=retries)
        try:
            return read_database(conn, axes)
        finally:
            conn.close()


def run(args: argparse.Namespace) -> int:
    if args.zero_distance <= 0:
        raise UsageError(f"--zero-distance must be > 0, got {args.zero_distance}")
    config = None
    if args.config is not None:
        from mpitrack.config import load_config

        config = load_config(args.config)
    truth_path = args.truth
    if truth_path is None:
        if args.config is None:
            raise UsageError("give --truth FILE (or --config FILE with truth.json beside it)")
        truth_path = args.config.parent / "truth.json"
    if (
        args.input is None
        and args.config is None
        and not (args.database_url or os.environ.get("MPITRACK_DATABASE_URL"))
    ):
        raise UsageError("give --input FILE, --config FILE or --database-url URL")
    try:
        truth = read_truth(truth_path)
        tracked = _load_tracked(args, truth.params.axes, config)
        check_match(truth, tracked, config)
        if not tracked:
            log.warning("the tracker output has no detected rows; every score will be 0")
        report = evaluate(truth, tracked, args.zero_distance)
    except (TruthError, EvaluationError) as exc:
        raise UsageError(str(exc)) from None
    report["truth"] = str(truth_path)
    report["source"] = str(args.input) if args.input is not None else "database"
    print(format_table(report), file=sys.stdout)
    if args.json is not None:
        tmp = args.json.with_name(f".{args.json.name}.tmp")
        try:
            tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, args.json)
        except OSError as exc:
            raise UsageError(f"cannot write {args.json}: {exc}") from None
    return 0
