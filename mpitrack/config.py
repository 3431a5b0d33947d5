"""Typed experiment configuration: a YAML file, then MPITRACK_* environment
variables, then command-line overrides, loaded into frozen dataclasses.

Every error names the file and the key path (``configs/x.yaml:
regions[3].frames: end 1500 is outside 0..1439``) because the person reading
it is at a beamline at 3 a.m. and must fix the file, not debug the loader.

Environment overrides: ``MPITRACK_DATABASE_URL``, ``MPITRACK_REDIS_URL``,
``MPITRACK_RUN``, ``MPITRACK_WORKDIR`` and, for any other key,
``MPITRACK_<SECTION>__<KEY>`` (e.g. ``MPITRACK_TRACKING__N_SCAN=4``), whose
value is parsed as YAML. Passwords never come from config files: a database
URL with a password in a YAML file is refused; put it in the environment or
in ~/.pgpass.
"""

from __future__ import annotations

import dataclasses
import math
import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mpitrack.config_parse import build_section, kind_of, read_yaml
from mpitrack.errors import ConfigError
from mpitrack.frames import DEFAULT_SETTLE_S, FramePattern
from mpitrack.track.detect import DetectParams
from mpitrack.track.mht import MHTParams
from mpitrack.urls import redact_url, url_problem, url_secrets

ENV_PREFIX = "MPITRACK_"
#: Region ids and scan numbers are PostgreSQL integers.
MAX_NUMBER = 2**31 - 1
DEFAULT_PATTERN = "region_{region}_frame_{frame}_scan_{scan}.npy"


@dataclass(frozen=True)
class MaskConfig:
    """Detector pixels without a measurement (gaps, dead pixels): neither background nor spot.

    values: marker values a detector writes into such pixels, e.g. [-1, 4294967295]
        (gaps as -1, dead pixels as 2^32-1 in uint32 frames); a pixel equal to one of
        them, compared in the file's own type, is masked, in region frames and in raw
        detector frames before they are cut. NaN pixels are always masked. The default
        masks 2^32-1, which no counting detector reaches as a real count.
    file: a .npy array of the region frame shape, nonzero = masked, for every
        region; "{region}" in the name gives one file per region.
    """

    values: tuple[float, ...] = (4294967295.0,)
    file: Path | None = None


@dataclass(frozen=True)
class FramesConfig:
    """Where frames arrive and what they look like.

    directory: the shared directory the detector (or a producer) writes to.
    pattern: file names relative to directory: a format string with {region},
        {frame} and {scan} (it may contain '/', e.g. per-scan subdirectories
        "scan_{scan}/region_{region}_frame_{frame}_scan_{scan}.npy", recommended
        past ~50,000 files), or "re:" + a regex with those named groups.
    settle_s: seconds a frame file must stay unchanged before an empty or short file
        is taken as final: a frame written in place is read again while it changes,
        and an empty one waited for, until then (atomic writers never wait).
    outside_links: read frames that are symbolic links out of the frame
        directory (refused by default).
    frames_per_scan: omega frames in one full scan; omega windows wrap at it.
    axes: names of the two frame axes (volume axes 1 and 2; axis 0 is omega).
    shape: expected shape of every frame; null accepts any consistent shape.
    mask: pixels without a measurement: marker values and/or a mask file
        (docs/detection.md).
    """

    directory: Path = Path("frames")
    pattern: str = DEFAULT_PATTERN
    settle_s: float = DEFAULT_SETTLE_S
    outside_links: bool = False
    frames_per_scan: int = 1440
    axes: tuple[str, str] = ("eta", "tth")
    shape: tuple[int, int] | None = None
    mask: MaskConfig = field(default_factory=MaskConfig)


@dataclass(frozen=True)
class ScansConfig:
    """The scans a run processes.

    first: the first scan number.
    last: the last scan number (inclusive); null = open-ended, for `run --follow`.
    """

    first: int = 0
    last: int | None = None


@dataclass(frozen=True)
class RegionConfig:
    """One region of diffraction space.

    id: the region number in frame names and in the database.
    frames: inclusive omega window [start, end]; start > end wraps through frame 0.
    description: free text stored in the regions table.
    """

    id: int
    frames: tuple[int, int]
    description: str = ""


@dataclass(frozen=True)
class RedisConfig:
    """Redis.

    url: its URL (no password here: use MPITRACK_REDIS_URL); null starts an
        embedded server under the work directory.
    reconnect_seconds: how long each Redis command retries a lost connection
        (with backoff) before the process gives up with exit code 3; a Redis
        restart shorter than this is a pause (`mpitrack work --reconnect`
        overrides it).
    """

    url: str | None = None
    reconnect_seconds: float = 60.0


@dataclass(frozen=True)
class DatabaseConfig:
    """PostgreSQL.

    url: its URL (no password here: use MPITRACK_DATABASE_URL or ~/.pgpass);
        null starts an embedded server under the work directory.
    synchronous_commit: wait for each job's commit to reach the disk. Off by
        default: commits stay atomic and an OS crash can only lose the newest
        commits, which the next run redoes from the equally older checkpoints.
    """

    url: str | None = None
    synchronous_commit: bool = False


@dataclass(frozen=True)
class RuntimeConfig:
    """How the runtime behaves around failures and waiting.

    on_failure: what a region does after one of its jobs fails: ``skip`` the scan
        (the tracker predicts through it), ``stop_region``, or ``abort`` the run.
    poll_interval: seconds between scans of the frame directory.
    idle_timeout: stop after this many seconds without new frames or finished
        jobs (null = wait for ever; `run --idle-timeout` overrides it).
    connect_retries: bounded retries (with exponential backoff) for servers.
    tracker_cache: regions whose trackers a worker keeps in memory at most; the
        least recently run is dropped first and, when its region comes back,
        resumed from its checkpoint (one read). Bounds a worker's memory in runs
        of many regions (benchmarks/scale.py).
    """

    on_failure: Literal["skip", "stop_region", "abort"] = "skip"
    poll_interval: float = 0.5
    idle_timeout: float | None = None
    connect_retries: int = 5
    tracker_cache: int = 20000


@dataclass(frozen=True)
class ProcessConfig:
    """Separate-process mode: `mpitrack dispatch` and `mpitrack work` (docs/process-mode.md).

    max_slots: jobs outstanding on the Redis stream at most: without
        `dispatch --slots`, one per region up to this many.
    lease: seconds a running job's lease lasts; a job whose worker stopped
        refreshing it (every third of it) is reclaimed by another worker
        (`work --lease` overrides it).
    max_attempts: attempts of a job before it goes to the dead-letter stream
        (`work --max-attempts` overrides it).
    """

    max_slots: int = 64
    lease: float = 60.0
    max_attempts: int = 3


@dataclass(frozen=True)
class DetectorConfig:
    """Raw detector frames, cut into the regions' frames by rank 0 (docs/detector.md).

    instrument: the instrument file (panels, geometry, omega axis).
    regions_file: every region's (eta x 2theta) grid, as `mpitrack detector
        regions` writes it; the config's regions (id, frames) must agree with it.
    directory: where the detector writes its files.
    format: ``hdf5`` (one frame stack per scan, or per scan and panel) or
        ``npy`` (one full frame per file).
    files: file names relative to directory, with {scan} and optionally {panel}
        (hdf5) or {scan}, {frame} and optionally {panel} (npy), e.g.
        "{panel}_{scan:06d}.h5"; without {panel} one stored image holds every
        panel at its offset.
    dataset: the HDF5 dataset of shape (frames, rows, cols), {panel} allowed:
        "/imageseries/images" (CHESS), "/entry/data/data" (NeXus, Eiger).
    ready: when an HDF5 file is complete: ``settle`` (mtime at least settle_s
        old and the file opens under HDF5's file lock, which a writer holds) or
        ``marker`` (the producer writes <file><marker_suffix> when done).
    settle_s: seconds an HDF5 file's mtime must be old in settle mode.
    marker_suffix: the "done" marker's suffix in marker mode.
    poll_budget_s: at most this many seconds of cutting per poll, so rank 0
        keeps dispatching while it cuts a backlog.
    lookahead: scans past the newest scan seen that are polled for files.
    cache: directory of the cached interpolation matrices; null =
        <frames.directory>/.samplers (dot-directories are never scanned).
    cut_files: false: `mpitrack run` keeps the cuts in memory and rank 0 sends each
        region's volume with its job over MPI (no region files); true: rank 0 writes
        region frame files (frames.pattern under frames.directory) and workers read
        them, for archiving and the report's spot images (`mpitrack detector cut`
        always writes files, for process mode).
    memory_scans: with cut_files false, rank 0 holds the cut volumes of at most this
        many scans not yet dispatched (it reads no frame of a later scan meanwhile).
    """

    instrument: Path
    regions_file: Path
    directory: Path = Path("raw")
    format: Literal["hdf5", "npy"] = "hdf5"
    files: str = "{panel}_{scan:06d}.h5"
    dataset: str = "/imageseries/images"
    ready: Literal["settle", "marker"] = "settle"
    settle_s: float = 1.0
    marker_suffix: str = ".done"
    poll_budget_s: float = 1.0
    lookahead: int = 2
    cache: Path | None = None
    cut_files: bool = False
    memory_scans: int = 2


@dataclass(frozen=True)
class ReportConfig:
    """The live HTML report the statistics role keeps up to date.

    enabled: write the report (statistics are stored either way).
    directory: where it goes; null = <workdir>/report.
    refresh_interval: seconds between redraws while a run goes on.
    spots: per-region pages with an image strip per track, drawn from the frames on
        disk (docs/statistics.md#spots); false saves reading every volume once more.
    spot_seconds: drawing time for the spot pages per live redraw at most; regions left
        over wait for the next redraw (the final report draws them all).
    """

    enabled: bool = True
    directory: Path | None = None
    refresh_interval: float = 10.0
    spots: bool = True
    spot_seconds: float = 30.0


@dataclass(frozen=True)
class Config:
    """A whole experiment's configuration (``source``: where it came from, for messages).

    run: the experiment's name: its Redis keys live under mpitrack:{run}: and its
        tables in the PostgreSQL schema of that name, so experiments can share servers.
    regions: the regions to track.
    workdir: embedded servers, logs and reports go here.
    frames: where frames arrive and what they look like.
    scans: which scans to process.
    detection: spot detection in each region volume.
    tracking: Multiple Hypothesis Tracking.
    database: PostgreSQL.
    redis: Redis.
    runtime: failures, polling, retries.
    process: separate-process mode (`mpitrack dispatch` and `mpitrack work`).
    report: the live HTML report.
    detector: raw detector frames cut into region frames by rank 0 (null: frames
        arrive as region files); see docs/detector.md.
    """

    run: str
    regions: tuple[RegionConfig, ...]
    workdir: Path = Path("runs/default")
    frames: FramesConfig = field(default_factory=FramesConfig)
    scans: ScansConfig = field(default_factory=ScansConfig)
    detection: DetectParams = field(default_factory=DetectParams)
    tracking: MHTParams = field(default_factory=MHTParams)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    detector: DetectorConfig | None = None
    source: str = "<defaults>"

    def region(self, region_id: int) -> RegionConfig:
        for region in self.regions:
            if region.id == region_id:
                return region
        raise KeyError(region_id)


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load and validate a config file.

    env defaults to os.environ; overrides maps dotted keys (``scans.last``) to
    values, as the command line gives them.
    """
    source = str(path)
    env = os.environ if env is None else env
    raw = read_yaml(path, "config")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, "", f"expected a mapping at the top level, got {kind_of(raw)}")
    _refuse_password(raw, source)
    # Where each key that did not come from the file came from, so that an error
    # blames the environment variable or the flag that caused it.
    origins = _apply_env(raw, env)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
        origins[dotted] = "command line"
    base = Path(path).resolve().parent
    try:
        config = config_from_dict(raw, source)
    except ConfigError as exc:
        origin = _origin_of(exc.key, origins)
        if origin is None:
            raise
        raise ConfigError(f"{origin} (over {source})", exc.key, exc.problem) from None
    return _resolve_paths(config, base)


def _origin_of(key: str, origins: Mapping[str, str]) -> str | None:
    """The environment variable or flag that set ``key`` (or a key above or below it)."""
    for dotted, origin in origins.items():
        for longer, shorter in ((key, dotted), (dotted, key)):
            if longer == shorter or longer.startswith((f"{shorter}.", f"{shorter}[")):
                return origin
    return None


def config_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build and validate a Config from plain data (paths stay as given)."""
    config = build_section(Config, raw, source, "")
    config = dataclasses.replace(config, source=source)
    _validate(config)
    return config


def _resolve_paths(config: Config, base: Path) -> Config:
    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else (base / p).resolve()

    report_dir = config.report.directory
    detector = None if config.detector is None else resolve_detector_paths(config.detector, base)
    mask = config.frames.mask
    if mask.file is not None:
        mask = dataclasses.replace(mask, file=absolute(mask.file))
    return dataclasses.replace(
        config,
        workdir=absolute(config.workdir),
        frames=dataclasses.replace(
            config.frames, directory=absolute(config.frames.directory), mask=mask
        ),
        report=dataclasses.replace(
            config.report, directory=None if report_dir is None else absolute(report_dir)
        ),
        detector=detector,
    )


def resolve_detector_paths(detector: DetectorConfig, base: Path) -> DetectorConfig:
    """The detector section with its relative paths made relative to ``base``."""

    def absolute(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p).resolve()

    return dataclasses.replace(
        detector,
        instrument=absolute(detector.instrument),
        regions_file=absolute(detector.regions_file),
        directory=absolute(detector.directory),
        cache=absolute(detector.cache),
    )


def validate_detector(source: str, detector: DetectorConfig) -> None:
    if detector.settle_s < 0:
        raise ConfigError(source, "detector.settle_s", "must be >= 0")
    if detector.poll_budget_s <= 0:
        raise ConfigError(source, "detector.poll_budget_s", "must be > 0")
    if detector.lookahead < 0:
        raise ConfigError(source, "detector.lookahead", "must be >= 0")
    if detector.memory_scans < 1:
        raise ConfigError(source, "detector.memory_scans", "must be >= 1")


def _refuse_password(raw: Mapping[str, Any], source: str) -> None:
    """A URL in the file with a password in any spelling (user:password@, ?password=,
    a key=value password=) is refused: config files are not for secrets."""
    for section in ("database", "redis"):
        url = (raw.get(section) or {}).get("url") if isinstance(raw.get(section), dict) else None
        if isinstance(url, str) and url_secrets(url):
            raise ConfigError(
                source,
                f"{section}.url",
                "contains a password; config files must not hold secrets: set "
                f"MPITRACK_{section.upper()}_URL in the environment (or use ~/.pgpass)",
            )


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply the MPITRACK_* variables; return which dotted key each one set."""
    shortcuts = {
        "MPITRACK_DATABASE_URL": "database.url",
        "MPITRACK_REDIS_URL": "redis.url",
        "MPITRACK_RUN": "run",
        "MPITRACK_WORKDIR": "workdir",
    }
    origins: dict[str, str] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        if name in shortcuts:
            _set_dotted(raw, shortcuts[name], value)
            origins[shortcuts[name]] = f"environment {name}"
        elif "__" in name:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"environment {name}", "", "value is not valid YAML") from None
            _set_dotted(raw, dotted, parsed)
            origins[dotted] = f"environment {name}"
    return origins


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def run_name_problem(name: str) -> str | None:
    """What is wrong with an experiment name, or None.

    The name keys the experiment's Redis keys and names its PostgreSQL schema,
    so it must be a schema name PostgreSQL accepts (at most 63 bytes, not
    ``pg_*``) that no one else uses (not ``public`` or ``information_schema``).
    """
    if not name or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in name):
        return f"{name!r}: use letters, digits, '-', '_' or '.'"
    if len(name) > 63:
        return f"{name!r}: at most 63 characters (it names the experiment's database schema)"
    if name.lower().startswith("pg_") or name.lower() in ("public", "information_schema"):
        return f"{name!r} is reserved in PostgreSQL, where it would name the experiment's schema"
    return None


def _validate(config: Config) -> None:
    source = config.source
    problem = run_name_problem(config.run)
    if problem:
        raise ConfigError(source, "run", problem)
    frames = config.frames
    try:
        FramePattern(frames.pattern)
    except ValueError as exc:
        raise ConfigError(source, "frames.pattern", str(exc)) from None
    if frames.settle_s < 0:
        raise ConfigError(source, "frames.settle_s", f"{frames.settle_s} must be >= 0")
    n_frames = frames.frames_per_scan
    if n_frames < 1:
        raise ConfigError(source, "frames.frames_per_scan", f"{n_frames} must be >= 1")
    if frames.axes[0] == frames.axes[1] or "omega" in frames.axes:
        raise ConfigError(
            source, "frames.axes", f"{list(frames.axes)}: need two distinct names, not 'omega'"
        )
    for i, value in enumerate(frames.mask.values):
        if not math.isfinite(value):
            raise ConfigError(
                source,
                f"frames.mask.values[{i}]",
                f"{value}: list finite values (NaN is always masked)",
            )
    if frames.mask.file is not None:
        try:
            parsed = list(string.Formatter().parse(str(frames.mask.file)))
        except ValueError as exc:
            raise ConfigError(source, "frames.mask.file", f"not a valid file name: {exc}") from None
        fields = {name for _, name, _, _ in parsed if name}
        if fields - {"region"}:
            raise ConfigError(
                source,
                "frames.mask.file",
                f"unknown field(s) {sorted(fields - {'region'})}; only {{region}}",
            )
    if frames.shape is not None and min(frames.shape) < 1:
        raise ConfigError(source, "frames.shape", f"{list(frames.shape)}: sizes must be >= 1")
    scans = config.scans
    if scans.first < 0:
        raise ConfigError(source, "scans.first", f"{scans.first} must be >= 0")
    for key, number in (("scans.first", scans.first), ("scans.last", scans.last)):
        if number is not None and number > MAX_NUMBER:
            raise ConfigError(source, key, f"{number} is above {MAX_NUMBER} (the database's limit)")
    if scans.last is not None and scans.last < scans.first:
        raise ConfigError(source, "scans.last", f"{scans.last} is before scans.first {scans.first}")
    if not config.regions:
        raise ConfigError(source, "regions", "at least one region is required")
    seen: set[int] = set()
    for i, region in enumerate(config.regions):
        if not 0 <= region.id <= MAX_NUMBER:
            raise ConfigError(source, f"regions[{i}].id", f"{region.id} must be 0..{MAX_NUMBER}")
        if region.id in seen:
            raise ConfigError(source, f"regions[{i}].id", f"{region.id} is used twice")
        seen.add(region.id)
        for end_name, value in zip(("start", "end"), region.frames, strict=True):
            if not 0 <= value < n_frames:
                raise ConfigError(
                    source,
                    f"regions[{i}].frames",
                    f"{end_name} {value} is outside 0..{n_frames - 1}",
                )
    runtime = config.runtime
    if runtime.poll_interval <= 0:
        raise ConfigError(source, "runtime.poll_interval", f"{runtime.poll_interval} must be > 0")
    if runtime.idle_timeout is not None and runtime.idle_timeout <= 0:
        raise ConfigError(
            source, "runtime.idle_timeout", f"{runtime.idle_timeout} must be > 0 (or null)"
        )
    for section, url in (("database", config.database.url), ("redis", config.redis.url)):
        problem = None if url is None else url_problem(url, section)
        if problem:
            raise ConfigError(source, f"{section}.url", f"{redact_url(url)}: {problem}")
    if config.detector is not None:
        validate_detector(source, config.detector)
    if config.report.refresh_interval <= 0:
        raise ConfigError(source, "report.refresh_interval", "must be > 0")
    if config.report.spot_seconds <= 0:
        raise ConfigError(source, "report.spot_seconds", "must be > 0")
    if runtime.connect_retries < 0:
        raise ConfigError(source, "runtime.connect_retries", "must be >= 0")
    if runtime.tracker_cache < 1:
        raise ConfigError(source, "runtime.tracker_cache", "must be >= 1")
    if config.redis.reconnect_seconds < 0:
        raise ConfigError(source, "redis.reconnect_seconds", "must be >= 0")
    process = config.process
    if process.max_slots < 1:
        raise ConfigError(source, "process.max_slots", "must be >= 1")
    if process.lease <= 0:
        raise ConfigError(source, "process.lease", "must be > 0")
    if process.max_attempts < 1:
        raise ConfigError(source, "process.max_attempts", "must be >= 1")
