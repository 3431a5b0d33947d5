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
import difflib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from mpitrack.errors import ConfigError
from mpitrack.track.detect import DetectParams
from mpitrack.track.mht import MHTParams

ENV_PREFIX = "MPITRACK_"
DEFAULT_PATTERN = "region_{region}_frame_{frame}_scan_{scan}.npy"


@dataclass(frozen=True)
class FramesConfig:
    """Where frames arrive and what they look like.

    directory: the shared directory the detector (or a producer) writes to.
    pattern: file names relative to directory: a format string with {region},
        {frame} and {scan} (it may contain '/', e.g. per-scan subdirectories
        "scan_{scan}/region_{region}_frame_{frame}_scan_{scan}.npy", recommended
        past ~50,000 files), or "re:" + a regex with those named groups.
    frames_per_scan: omega frames in one full scan; omega windows wrap at it.
    axes: names of the two frame axes (volume axes 1 and 2; axis 0 is omega).
    shape: expected shape of every frame; null accepts any consistent shape.
    """

    directory: Path = Path("frames")
    pattern: str = DEFAULT_PATTERN
    frames_per_scan: int = 1440
    axes: tuple[str, str] = ("eta", "tth")
    shape: tuple[int, int] | None = None


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
class ServiceConfig:
    """A server.

    url: its URL; null starts an embedded server under the work directory.
    """

    url: str | None = None


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
    """

    on_failure: Literal["skip", "stop_region", "abort"] = "skip"
    poll_interval: float = 0.5
    idle_timeout: float | None = None
    connect_retries: int = 5


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


@dataclass(frozen=True)
class ReportConfig:
    """The live HTML report the statistics role keeps up to date.

    enabled: write the report (statistics are stored either way).
    directory: where it goes; null = <workdir>/report.
    refresh_interval: seconds between redraws while a run goes on.
    """

    enabled: bool = True
    directory: Path | None = None
    refresh_interval: float = 10.0


@dataclass(frozen=True)
class Config:
    """A whole experiment's configuration (``source``: where it came from, for messages).

    run: the experiment's name; Redis keys live under mpitrack:{run}:.
    regions: the regions to track.
    workdir: embedded servers, logs and reports go here.
    frames: where frames arrive and what they look like.
    scans: which scans to process.
    detection: spot detection in each region volume.
    tracking: Multiple Hypothesis Tracking.
    database: PostgreSQL.
    redis: Redis.
    runtime: failures, polling, retries.
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
    redis: ServiceConfig = field(default_factory=ServiceConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    detector: DetectorConfig | None = None
    source: str = "<defaults>"

    def region(self, region_id: int) -> RegionConfig:
        for region in self.regions:
            if region.id == region_id:
                return region
        raise KeyError(region_id)


_NOT_FROM_FILE = {"source"}


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
        raise ConfigError(source, "", f"expected a mapping at the top level, got {_kind(raw)}")
    _refuse_password(raw, source)
    _apply_env(raw, env)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    base = Path(path).resolve().parent
    config = config_from_dict(raw, source)
    return _resolve_paths(config, base)


def read_yaml(path: str | os.PathLike[str], kind: str) -> Any:
    """A YAML file's content; a missing, unreadable or malformed file is a ConfigError
    naming the file (kind: what the file is, for the message)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", f"no such {kind} file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, "", f"malformed YAML: {where}{problem}") from None


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
    return dataclasses.replace(
        config,
        workdir=absolute(config.workdir),
        frames=dataclasses.replace(config.frames, directory=absolute(config.frames.directory)),
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


def _refuse_password(raw: Mapping[str, Any], source: str) -> None:
    for section in ("database", "redis"):
        url = (raw.get(section) or {}).get("url") if isinstance(raw.get(section), dict) else None
        if isinstance(url, str) and urlsplit(url).password:
            raise ConfigError(
                source,
                f"{section}.url",
                "contains a password; config files must not hold secrets: set "
                f"MPITRACK_{section.upper()}_URL in the environment (or use ~/.pgpass)",
            )


def _apply_env(raw: dict[str, Any], env: Mapping[str, str]) -> None:
    shortcuts = {
        "MPITRACK_DATABASE_URL": "database.url",
        "MPITRACK_REDIS_URL": "redis.url",
        "MPITRACK_RUN": "run",
        "MPITRACK_WORKDIR": "workdir",
    }
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        if name in shortcuts:
            _set_dotted(raw, shortcuts[name], value)
        elif "__" in name:
            dotted = name[len(ENV_PREFIX) :].lower().replace("__", ".")
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(f"environment {name}", "", "value is not valid YAML") from None
            _set_dotted(raw, dotted, parsed)


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


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def build_section(cls: type, raw: Any, source: str, path: str) -> Any:
    """A config dataclass from plain data; errors name source and key path."""
    if not isinstance(raw, Mapping):
        raise ConfigError(source, path or "<top>", f"expected a mapping, got {_kind(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_FROM_FILE}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = (
                f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            )
            raise ConfigError(source, _join(path, str(key)), f"unknown key{hint}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in raw:
            values[name] = _convert(hints[name], raw[name], source, key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, key_path, "is required")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, path or "<top>", str(exc)) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: Any, source: str, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, source, path)
    if value is None:
        raise ConfigError(source, path, "must not be null")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(source, path, f"{value!r} is not one of {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(source, path, f"expected a list, got {_kind(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, source, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(source, path, f"expected a list of {len(args)}, got {len(value)}")
        return tuple(
            _convert(a, v, source, f"{path}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, source, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(source, path, f"unsupported type {hint!r} (a bug in mpitrack)")


def _validate(config: Config) -> None:
    source = config.source
    if not config.run or not all(c.isalnum() or c in "-_." for c in config.run):
        raise ConfigError(source, "run", f"{config.run!r}: use letters, digits, '-', '_' or '.'")
    frames = config.frames
    n_frames = frames.frames_per_scan
    if n_frames < 1:
        raise ConfigError(source, "frames.frames_per_scan", f"{n_frames} must be >= 1")
    if frames.axes[0] == frames.axes[1] or "omega" in frames.axes:
        raise ConfigError(
            source, "frames.axes", f"{list(frames.axes)}: need two distinct names, not 'omega'"
        )
    if frames.shape is not None and min(frames.shape) < 1:
        raise ConfigError(source, "frames.shape", f"{list(frames.shape)}: sizes must be >= 1")
    scans = config.scans
    if scans.first < 0:
        raise ConfigError(source, "scans.first", f"{scans.first} must be >= 0")
    if scans.last is not None and scans.last < scans.first:
        raise ConfigError(source, "scans.last", f"{scans.last} is before scans.first {scans.first}")
    if not config.regions:
        raise ConfigError(source, "regions", "at least one region is required")
    seen: set[int] = set()
    for i, region in enumerate(config.regions):
        if region.id < 0:
            raise ConfigError(source, f"regions[{i}].id", f"{region.id} must be >= 0")
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
    if config.detector is not None:
        validate_detector(source, config.detector)
    if config.report.refresh_interval <= 0:
        raise ConfigError(source, "report.refresh_interval", "must be > 0")
    if runtime.connect_retries < 0:
        raise ConfigError(source, "runtime.connect_retries", "must be >= 0")
