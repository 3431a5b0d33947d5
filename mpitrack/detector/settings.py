"""The ``detector:`` settings and the cutter they build.

The keys are the experiment config's ``detector:`` section (DetectorConfig in
mpitrack/config.py); `mpitrack detector cut` also reads them from a side file
(``detector.yaml`` beside the config, or ``--detector FILE``), relative paths
in it being relative to that file.
"""

from __future__ import annotations

import os
from pathlib import Path

from mpitrack.config import (
    Config,
    DetectorConfig,
    resolve_detector_paths,
    validate_detector,
)
from mpitrack.config_parse import build_section, read_yaml
from mpitrack.detector.cutter import Cutter
from mpitrack.detector.fanout import VolumeBuffer
from mpitrack.detector.instrument import load_instrument
from mpitrack.detector.regions import check_against_config, load_regions
from mpitrack.detector.sampling import cached_sampler
from mpitrack.detector.sources import FrameSource, Hdf5Stacks, NpyFrames
from mpitrack.errors import ConfigError
from mpitrack.regions import windows_of


def detector_from_dict(raw, source: str, base: Path | None = None) -> DetectorConfig:
    detector = build_section(DetectorConfig, raw, source, "detector")
    validate_detector(source, detector)
    return detector if base is None else resolve_detector_paths(detector, base)


def load_detector_config(path: str | os.PathLike[str]) -> DetectorConfig:
    """A side file holding the ``detector:`` keys (top level, or under ``detector:``)."""
    source = str(path)
    raw = read_yaml(path, "detector")
    if isinstance(raw, dict) and set(raw) == {"detector"}:
        raw = raw["detector"]
    return detector_from_dict(raw, source, Path(path).resolve().parent)


def make_source(detector: DetectorConfig, instrument, strict: bool = False) -> FrameSource:
    if detector.format == "hdf5":
        return Hdf5Stacks(
            instrument,
            detector.directory,
            detector.files,
            detector.dataset,
            ready=detector.ready,
            settle_s=detector.settle_s,
            marker_suffix=detector.marker_suffix,
            strict=strict,
        )
    return NpyFrames(instrument, detector.directory, detector.files, strict=strict)


def make_cutter(
    config: Config,
    detector: DetectorConfig,
    *,
    strict: bool = False,
    source_name: str = "",
    in_memory: bool = False,
) -> Cutter:
    """The cutter of an experiment: raw frames in, region frames into frames.directory,
    or with ``in_memory`` into volumes held for the jobs (fanout.py)."""
    where = source_name or config.source
    instrument = load_instrument(detector.instrument)
    if instrument.frames_per_scan != config.frames.frames_per_scan:
        raise ConfigError(
            config.source,
            "frames.frames_per_scan",
            f"{config.frames.frames_per_scan} differs from frames_per_scan "
            f"{instrument.frames_per_scan} in {detector.instrument}",
        )
    grids = load_regions(detector.regions_file)
    check_against_config(grids, config, str(detector.regions_file))
    wanted = {r.id for r in config.regions}
    cache = detector.cache or (config.frames.directory / ".samplers")
    try:
        source = make_source(detector, instrument, strict)
    except ValueError as exc:
        raise ConfigError(where, "detector", str(exc)) from None
    samplers = {g.id: cached_sampler(instrument, g, cache) for g in grids if g.id in wanted}
    windows = windows_of(config)
    buffer = None
    if in_memory:
        shapes = {g.id: (g.shape[0], g.shape[1]) for g in grids if g.id in wanted}
        buffer = VolumeBuffer(windows, shapes, detector.memory_scans)
    return Cutter(
        source,
        samplers,
        windows,
        config.frames.directory,
        config.frames.pattern,
        first_scan=config.scans.first,
        last_scan=config.scans.last,
        poll_budget_s=detector.poll_budget_s,
        lookahead=detector.lookahead,
        mask_values=config.frames.mask.values,
        buffer=buffer,
    )
