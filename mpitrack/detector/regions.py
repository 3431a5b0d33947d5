"""Regions from the experiment: (eta x 2theta) grids with omega windows.

A region's frame is a regular grid in angle, not a box of detector pixels:
axis 1 is eta, axis 2 is 2theta (the config's default ``frames.axes``), so a
spot's motion along a ring is motion along one axis whatever panel it is on.
Regions come from rings (a 2theta and a radial width, an eta range split into
N regions, omega windows) or from predicted spot positions; the sampling steps
default to about one detector pixel at the ring.

The regions file (``mpitrack detector regions`` writes it) holds every region's
grid; the experiment config's ``regions:`` list (id and omega window) must
agree with it, which ``check_against_config`` verifies.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mpitrack.config import Config
from mpitrack.config_parse import build_section, read_yaml
from mpitrack.detector.instrument import Instrument
from mpitrack.errors import ConfigError


@dataclass(frozen=True)
class RegionGrid:
    """One region's sampling grid.

    id: the region number (frame names, database).
    frames: inclusive omega window [start, end] in frames; start > end wraps.
    eta: (first, last) eta sample in degrees (axis 1).
    tth: (first, last) 2theta sample in degrees (axis 2).
    shape: (n_eta, n_tth) samples.
    description: free text (stored in the regions table).
    """

    id: int
    frames: tuple[int, int]
    eta: tuple[float, float]
    tth: tuple[float, float]
    shape: tuple[int, int]
    description: str = ""

    def __post_init__(self) -> None:
        if self.id < 0:
            raise ValueError(f"id {self.id} must be >= 0")
        if min(self.shape) < 2:
            raise ValueError(f"shape {list(self.shape)}: at least 2 samples per axis")

    def eta_values(self) -> np.ndarray:
        return np.linspace(self.eta[0], self.eta[1], self.shape[0])

    def tth_values(self) -> np.ndarray:
        return np.linspace(self.tth[0], self.tth[1], self.shape[1])

    def to_index(self, tth: float, eta: float) -> tuple[float, float]:
        """Continuous (eta index, tth index) of an angle pair in this grid."""
        de = (self.eta[1] - self.eta[0]) / (self.shape[0] - 1)
        dt = (self.tth[1] - self.tth[0]) / (self.shape[1] - 1)
        return (eta - self.eta[0]) / de, (tth - self.tth[0]) / dt


@dataclass(frozen=True)
class RingSpec:
    """A diffraction ring to cut into regions.

    tth: the ring's 2theta in degrees.
    width: full radial width in degrees of 2theta.
    eta: (start, end) eta range in degrees, split into n_regions equal parts.
    n_regions: regions along eta.
    omega: omega windows in degrees, each [start, end] (end < start wraps through 360);
        every eta part gets one region per window.
    tth_step: 2theta sampling step in degrees; null = about one pixel.
    eta_step: eta sampling step in degrees; null = about one pixel at the ring.
    """

    tth: float
    width: float
    eta: tuple[float, float]
    n_regions: int = 1
    omega: tuple[tuple[float, float], ...] = ((0.0, 360.0),)
    tth_step: float | None = None
    eta_step: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.tth < 180:
            problems.append(f"tth {self.tth} must be in (0, 180)")
        if self.width <= 0:
            problems.append(f"width {self.width} must be > 0")
        if self.eta[1] <= self.eta[0]:
            problems.append(f"eta {list(self.eta)}: end must be above start")
        if self.n_regions < 1:
            problems.append(f"n_regions {self.n_regions} must be >= 1")
        if not self.omega:
            problems.append("give at least one omega window")
        for step in ("tth_step", "eta_step"):
            value = getattr(self, step)
            if value is not None and value <= 0:
                problems.append(f"{step} {value} must be > 0")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class SpotSpec:
    """A predicted spot: a region is centred on it.

    tth, eta, omega: the spot's predicted position in degrees.
    """

    tth: float
    eta: float
    omega: float


def omega_frames(instrument: Instrument, start: float, end: float) -> tuple[int, int]:
    """Inclusive frame window covering omega [start, end] degrees (end < start wraps)."""
    n = instrument.frames_per_scan
    span = (end - start) % 360.0 or 360.0
    first = instrument.frame_of(start)
    count = max(1, min(n, math.ceil(span / abs(instrument.step) - 1e-9)))
    return first, (first + count - 1) % n


def _steps(instrument: Instrument, tth: float) -> tuple[float, float]:
    """Finest (dtth, deta) over panels: sampling at about one pixel of the finest panel."""
    pairs = [p.geometry.pixel_angle(tth) for p in instrument.panels]
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def _samples(span: float, step: float) -> int:
    return max(2, math.ceil(span / step - 1e-9) + 1)


def regions_from_rings(
    instrument: Instrument, rings: Sequence[RingSpec], first_id: int = 0
) -> list[RegionGrid]:
    """Regions of each ring: its eta range split into n_regions, times each omega window."""
    out: list[RegionGrid] = []
    next_id = first_id
    for ring_index, ring in enumerate(rings):
        auto_tth, auto_eta = _steps(instrument, ring.tth)
        dtth = ring.tth_step or auto_tth
        deta = ring.eta_step or auto_eta
        n_tth = _samples(ring.width, dtth)
        part = (ring.eta[1] - ring.eta[0]) / ring.n_regions
        n_eta = _samples(part, deta)
        tth = (ring.tth - ring.width / 2, ring.tth + ring.width / 2)
        for window in ring.omega:
            frames = omega_frames(instrument, window[0], window[1])
            for k in range(ring.n_regions):
                eta = (ring.eta[0] + k * part, ring.eta[0] + (k + 1) * part)
                out.append(
                    RegionGrid(
                        id=next_id,
                        frames=frames,
                        eta=eta,
                        tth=tth,
                        shape=(n_eta, n_tth),
                        description=(
                            f"ring {ring_index} 2theta {ring.tth:g} eta {eta[0]:.3f}.."
                            f"{eta[1]:.3f} omega {window[0]:g}..{window[1]:g}"
                        ),
                    )
                )
                next_id += 1
    return out


def regions_from_spots(
    instrument: Instrument,
    spots: Iterable[SpotSpec],
    tth_width: float,
    eta_width: float,
    omega_width: float,
    first_id: int = 0,
) -> list[RegionGrid]:
    """One region centred on each predicted spot, with the given full widths (degrees)."""
    out = []
    for i, spot in enumerate(spots):
        dtth, deta = _steps(instrument, spot.tth)
        half_o = omega_width / 2
        out.append(
            RegionGrid(
                id=first_id + i,
                frames=omega_frames(instrument, spot.omega - half_o, spot.omega + half_o),
                eta=(spot.eta - eta_width / 2, spot.eta + eta_width / 2),
                tth=(spot.tth - tth_width / 2, spot.tth + tth_width / 2),
                shape=(_samples(eta_width, deta), _samples(tth_width, dtth)),
                description=f"spot 2theta {spot.tth:g} eta {spot.eta:g} omega {spot.omega:g}",
            )
        )
    return out


# ----------------------------------------------------------------------------- files


def _list_of(cls: type, raw: Any, source: str, key: str) -> list[Any]:
    if not isinstance(raw, dict) or key not in raw:
        raise ConfigError(source, key, "is required (a list)")
    items = raw[key]
    if not isinstance(items, list):
        raise ConfigError(source, key, "expected a list")
    return [build_section(cls, item, source, f"{key}[{i}]") for i, item in enumerate(items)]


def load_rings(path: str | os.PathLike[str]) -> list[RingSpec]:
    """A rings file: ``rings: [{tth, width, eta: [a, b], n_regions, omega: [[s, e]]}]``."""
    return _list_of(RingSpec, read_yaml(path, "rings"), str(path), "rings")


def load_spots(path: str | os.PathLike[str]) -> list[SpotSpec]:
    """A predicted-spots file: ``spots: [{tth, eta, omega}, ...]`` (degrees)."""
    return _list_of(SpotSpec, read_yaml(path, "spots"), str(path), "spots")


def load_regions(path: str | os.PathLike[str]) -> list[RegionGrid]:
    """A regions file as ``write_regions`` writes it."""
    source = str(path)
    grids = _list_of(RegionGrid, read_yaml(path, "regions"), source, "regions")
    seen: set[int] = set()
    for i, grid in enumerate(grids):
        if grid.id in seen:
            raise ConfigError(source, f"regions[{i}].id", f"{grid.id} is used twice")
        seen.add(grid.id)
    return grids


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return float(value)
    return value


def write_regions(path: str | os.PathLike[str], grids: Sequence[RegionGrid]) -> None:
    data = {"regions": [{k: _plain(v) for k, v in dataclasses.asdict(g).items()} for g in grids]}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def config_regions(grids: Sequence[RegionGrid]) -> list[dict[str, Any]]:
    """The experiment config's ``regions:`` entries for these grids."""
    return [{"id": g.id, "frames": list(g.frames), "description": g.description} for g in grids]


def check_against_config(grids: Sequence[RegionGrid], config: Config, source: str) -> None:
    """Refuse a regions file that disagrees with the config's regions (id and window)."""
    by_id = {g.id: g for g in grids}
    for i, region in enumerate(config.regions):
        grid = by_id.get(region.id)
        if grid is None:
            raise ConfigError(
                config.source, f"regions[{i}].id", f"region {region.id} is not in {source}"
            )
        if tuple(grid.frames) != tuple(region.frames):
            raise ConfigError(
                config.source,
                f"regions[{i}].frames",
                f"{list(region.frames)} differs from {list(grid.frames)} in {source}",
            )
    if config.frames.shape is not None:
        for grid in grids:
            if grid.id in {r.id for r in config.regions} and grid.shape != config.frames.shape:
                raise ConfigError(
                    config.source,
                    "frames.shape",
                    f"{list(config.frames.shape)} but region {grid.id} in {source} is "
                    f"{list(grid.shape)}",
                )
