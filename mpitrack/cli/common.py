"""Arguments and steps that several subcommands share."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from mpitrack.config import Config, load_config, run_name_problem
from mpitrack.errors import UsageError
from mpitrack.urls import redact_url, url_problem


def add_config_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        required=required,
        metavar="FILE",
        help="experiment config (YAML); MPITRACK_* environment variables override it",
    )


def add_database_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: MPITRACK_DATABASE_URL, then the config's database.url, "
        "then an embedded server under the work directory). Put passwords in ~/.pgpass "
        "or the environment, not on the command line.",
    )


def add_workdir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="work directory holding the embedded servers (default: the config's workdir)",
    )


def add_retry_failed_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="track the regions that have failed jobs (table job_failures) again from their "
        "first scan: fix or replace their frames first (docs/admin.md)",
    )


def add_run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run",
        metavar="NAME",
        help="the experiment (its run name, which names its schema in the database); "
        "default: the config's run, else MPITRACK_RUN",
    )


def experiment_name(args: argparse.Namespace) -> str | None:
    """The experiment a command acts on: --run, else the config's run (which
    MPITRACK_RUN overrides), else MPITRACK_RUN; None when none is given."""
    name = getattr(args, "run", None)
    if name is None and getattr(args, "config", None) is not None:
        return load(args).run
    name = name or os.environ.get("MPITRACK_RUN")
    if name is not None:
        problem = run_name_problem(name)
        if problem:
            raise UsageError(f"--run {name!r}: {problem}")
    return name


def load(args: argparse.Namespace) -> Config:
    return load_config(args.config)


def workdir_and_database(args: argparse.Namespace) -> tuple[Path, str | None]:
    """The work directory (for embedded servers) and the database URL, if any is given."""
    url = getattr(args, "database_url", None) or os.environ.get("MPITRACK_DATABASE_URL")
    problem = url_problem(url, "database") if url else None
    if url and problem:
        raise UsageError(f"database URL {redact_url(url)}: {problem}")
    if getattr(args, "config", None) is not None:
        config = load(args)
        workdir = args.workdir.resolve() if getattr(args, "workdir", None) else config.workdir
        return workdir, url or config.database.url
    if url is None and getattr(args, "workdir", None) is None:
        raise UsageError("give --config FILE, --database-url URL or set MPITRACK_DATABASE_URL")
    return Path(getattr(args, "workdir", None) or "runs/default").resolve(), url


def parse_scans(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match or int(match.group(1)) > int(match.group(2)):
        raise UsageError(f"--scans {text!r}: expected A:B with 0 <= A <= B, e.g. --scans 0:19")
    return int(match.group(1)), int(match.group(2))


def load_run_config(args: argparse.Namespace) -> Config:
    """The config of a run (`mpitrack run`, `mpitrack dispatch`), with --scans,
    --database-url and --redis-url applied; a bounded run needs a last scan."""
    overrides: dict[str, object] = {}
    if args.scans:
        overrides["scans.first"], overrides["scans.last"] = parse_scans(args.scans)
    if args.database_url:
        overrides["database.url"] = args.database_url
    if args.redis_url:
        overrides["redis.url"] = args.redis_url
    config = load_config(args.config, overrides=overrides)
    if args.idle_timeout is not None and args.idle_timeout <= 0:
        raise UsageError(f"--idle-timeout {args.idle_timeout}: must be > 0")
    if not args.follow and config.scans.last is None:
        raise UsageError(
            f"{args.config}: scans.last is not set: give --scans A:B, set it, or use --follow"
        )
    return config
