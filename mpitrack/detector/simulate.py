"""A synthetic detector experiment: full detector frames of spots at known angles.

Spots are Gaussians in (2theta, eta, omega): every detector pixel gets the
spot's profile evaluated at the pixel centre's (2theta, eta), times the
fraction of the spot's omega profile inside the frame's omega interval. So the
truth is exact in angle, and therefore in each region's (omega, eta, 2theta)
voxel coordinates, whatever the panels' tilts and flips: the whole raw path
(sources, geometry, interpolation, cutter) is tested against it.

The same spots are also written, optionally, straight onto the regions' grids
as per-region frame files (``direct/``): the per-region-file path on the same
spots, which the end-to-end test tracks too and compares.

Layout under the output directory: instrument.yaml, rings.yaml, regions.yaml,
detector.yaml (the detector settings), experiment.yaml (frames.directory =
cuts/), raw/ (the detector's files), truth.json, and with direct frames
direct/ and experiment-direct.yaml.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from scipy.special import ndtr

from mpitrack.detector.instrument import Instrument, PanelSpec, instrument_to_dict
from mpitrack.detector.regions import (
    RegionGrid,
    RingSpec,
    config_regions,
    regions_from_rings,
    write_regions,
)
from mpitrack.regions import omega_window

log = logging.getLogger(__name__)

# File names and the HDF5 dataset of the simulated detector experiment.
FRAME_PATTERN = "region_{region}_frame_{frame}_scan_{scan}.npy"
HDF5_FILES = "{panel}_{scan:04d}.h5"
NPY_FILES = "scan_{scan:04d}/{panel}_{frame:04d}.npy"
DATASET = "/imageseries/images"


def tiny_instrument(size: int = 256, frames_per_scan: int = 72) -> Instrument:
    """Two size x size panels (51.2 mm square) either side of the beam; the right one
    tilted and stored left-right flipped, so flips and tilts are always exercised."""
    gap = 10
    pitch = 51.2 / size  # the panels span 51.2 mm whatever their pixel count
    common = dict(rows=size, cols=size, pixel_size=(pitch, pitch), distance=300.0)
    return Instrument(
        panels=(
            PanelSpec(name="left", beam_center=(size / 2, size + gap), **common),  # type: ignore[arg-type]
            PanelSpec(
                name="right",
                beam_center=(size / 2, -gap),
                tilt=(0.5, -1.0, 0.3),
                flip="lr",
                **common,  # type: ignore[arg-type]
            ),
        ),
        frames_per_scan=frames_per_scan,
        source="<tiny instrument>",
    )


def tiny_rings(instrument: Instrument) -> list[RingSpec]:
    """Two rings, each cut on both panels; the second ring's omega window wraps."""
    step = instrument.step
    inner = math.degrees(math.atan(20.0 / instrument.panels[0].distance))
    outer = math.degrees(math.atan(26.0 / instrument.panels[0].distance))
    win_a = (50.0, 50.0 + 10 * step)
    win_b = (360.0 - 4 * step, 6 * step)
    out = []
    for tth, window in ((inner, win_a), (outer, win_b)):
        for eta in ((-30.0, 30.0), (150.0, 210.0)):
            out.append(RingSpec(tth=tth, width=0.6, eta=eta, n_regions=2, omega=(window,)))
    return out


@dataclass(frozen=True)
class TrueDetectorSpot:
    """A spot's angles at scan 0 and its drift per scan (degrees)."""

    region: int
    spot: int
    tth: float
    eta: float
    omega: float
    d_tth: float
    d_eta: float
    d_omega: float

    def at(self, k: int) -> tuple[float, float, float]:
        return self.tth + k * self.d_tth, self.eta + k * self.d_eta, self.omega + k * self.d_omega


@dataclass(frozen=True)
class DetectorSimSpec:
    """A synthetic detector experiment.

    format: raw files as HDF5 stacks per scan and panel, or one .npy per frame.
    spots_per_region: spots placed in each region, spread along eta.
    amplitude: a spot's peak counts over its whole omega profile.
    sigma_px: spot width in (2theta, eta) in pixels; sigma_frames in omega frames.
    direct: also write the same spots straight onto the regions' grids.
    fps: raw frames per second (None: as fast as possible), for live tests.
    marker: write <file>.done after each HDF5 file is closed.
    """

    out_dir: Path
    scans: int = 4
    seed: int = 0
    format: Literal["hdf5", "npy"] = "hdf5"
    panel_size: int = 256
    frames_per_scan: int = 72
    spots_per_region: int = 2
    background: float = 20.0
    amplitude: float = 20000.0
    sigma_px: float = 1.5
    sigma_frames: float = 1.0
    direct: bool = True
    run: str = "detsim"
    fps: float | None = None
    marker: bool = False


def place_spots(
    spec: DetectorSimSpec, instrument: Instrument, grids: list[RegionGrid]
) -> list[TrueDetectorSpot]:
    rng = np.random.default_rng(spec.seed)
    spots = []
    step = instrument.step
    for grid in grids:
        window = omega_window(grid.frames[0], grid.frames[1], instrument.frames_per_scan)
        mid = window[len(window) // 2]
        omega0 = instrument.omega_start + (mid + 0.5) * step
        eta_span = grid.eta[1] - grid.eta[0]
        tth_mid = 0.5 * (grid.tth[0] + grid.tth[1])
        tth_span = grid.tth[1] - grid.tth[0]
        for s in range(spec.spots_per_region):
            frac = (s + 1) / (spec.spots_per_region + 1)
            spots.append(
                TrueDetectorSpot(
                    region=grid.id,
                    spot=s,
                    tth=tth_mid + rng.uniform(-0.1, 0.1) * tth_span,
                    eta=grid.eta[0] + frac * eta_span + rng.uniform(-0.02, 0.02) * eta_span,
                    omega=omega0 + rng.uniform(-0.5, 0.5) * step,
                    d_tth=rng.uniform(-0.01, 0.01) * tth_span,
                    d_eta=rng.uniform(-0.005, 0.005) * eta_span,
                    d_omega=rng.uniform(-0.1, 0.1) * step,
                )
            )
    return spots


def _sigmas(instrument: Instrument, spec: DetectorSimSpec, tth: float) -> tuple[float, float]:
    dtth, deta = instrument.panels[0].geometry.pixel_angle(tth)
    return spec.sigma_px * dtth, spec.sigma_px * deta


def _omega_weights(instrument: Instrument, omega: float, sigma_frames: float) -> np.ndarray:
    """Fraction of a spot's omega profile in each frame of the scan (wrapping at 360)."""
    n = instrument.frames_per_scan
    centre = float(instrument.omega_position(omega))
    d = (np.arange(n) - centre + n / 2) % n - n / 2
    return ndtr((d + 0.5) / sigma_frames) - ndtr((d - 0.5) / sigma_frames)


def _profile(
    tth: np.ndarray, eta: np.ndarray, spot: tuple[float, float, float], sig: tuple[float, float]
) -> np.ndarray:
    d_eta = (eta - spot[1] + 180.0) % 360.0 - 180.0
    return np.exp(-0.5 * (((tth - spot[0]) / sig[0]) ** 2 + (d_eta / sig[1]) ** 2))


def _save_npy(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(buffer.getbuffer())
    os.replace(tmp, path)


def _yaml(path: Path, data) -> None:
    """Write atomically (``.<name>.tmp``, then ``os.replace``): a live run may read the
    config files while raw frames are still being written, and must never see half."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def simulate_detector(spec: DetectorSimSpec) -> dict[str, object]:
    """Write the experiment; returns a summary (paths, counts)."""
    out = spec.out_dir
    out.mkdir(parents=True, exist_ok=True)
    instrument = tiny_instrument(spec.panel_size, spec.frames_per_scan)
    rings = tiny_rings(instrument)
    grids = regions_from_rings(instrument, rings)
    spots = place_spots(spec, instrument, grids)
    _yaml(out / "instrument.yaml", instrument_to_dict(instrument))
    _yaml(
        out / "rings.yaml",
        {
            "rings": [
                {
                    "tth": r.tth,
                    "width": r.width,
                    "eta": list(r.eta),
                    "n_regions": r.n_regions,
                    "omega": [list(w) for w in r.omega],
                }
                for r in rings
            ]
        },
    )
    write_regions(out / "regions.yaml", grids)
    files = HDF5_FILES if spec.format == "hdf5" else NPY_FILES
    _yaml(
        out / "detector.yaml",
        {
            "instrument": "instrument.yaml",
            "regions_file": "regions.yaml",
            "directory": "raw",
            "format": spec.format,
            "files": files,
            "dataset": DATASET,
            "ready": "marker" if spec.marker else "settle",
            "settle_s": 0.5,
        },
    )
    experiment = {
        "run": spec.run,
        "workdir": "run",
        "frames": {
            "directory": "cuts",
            "pattern": FRAME_PATTERN,
            "frames_per_scan": spec.frames_per_scan,
        },
        "scans": {"first": 0, "last": spec.scans - 1},
        "regions": config_regions(grids),
    }
    _yaml(out / "experiment.yaml", experiment)
    if spec.direct:
        direct = dict(experiment, workdir="run-direct")
        direct["frames"] = dict(experiment["frames"], directory="direct")  # type: ignore[arg-type]
        _yaml(out / "experiment-direct.yaml", direct)
    _write_truth(out / "truth.json", spec, instrument, grids, spots)
    started = time.monotonic()
    n_raw = _write_raw(spec, instrument, spots, out / "raw")
    if spec.direct:
        _write_direct(spec, instrument, grids, spots, out / "direct")
    return {
        "raw_frames": n_raw,
        "regions": len(grids),
        "spots": len(spots),
        "seconds": time.monotonic() - started,
        "experiment": out / "experiment.yaml",
        "detector": out / "detector.yaml",
    }


def _write_truth(path, spec, instrument, grids, spots) -> None:
    by_id = {g.id: g for g in grids}
    n = instrument.frames_per_scan
    records = []
    for spot in spots:
        grid = by_id[spot.region]
        positions = []
        for k in range(spec.scans):
            tth, eta, omega = spot.at(k)
            e_idx, t_idx = grid.to_index(tth, eta)
            o_idx = (float(instrument.omega_position(omega)) - grid.frames[0]) % n
            positions.append([o_idx, e_idx, t_idx])
        records.append(
            {
                "region": spot.region,
                "spot": spot.spot,
                "positions": positions,
                "angles": [list(spot.at(k)) for k in range(spec.scans)],
            }
        )
    path.write_text(json.dumps({"axes": ["omega", "eta", "tth"], "spots": records}, indent=1))


def _write_raw(spec, instrument: Instrument, spots, raw: Path) -> int:
    raw.mkdir(parents=True, exist_ok=True)
    n = instrument.frames_per_scan
    maps = []
    for panel in instrument.panels:
        g = panel.geometry
        rows, cols = np.mgrid[0 : g.rows, 0 : g.cols]
        maps.append(g.pixel_to_angles(rows, cols))
    written = 0
    interval = 1.0 / spec.fps if spec.fps else 0.0
    for scan in range(spec.scans):
        rng = np.random.default_rng([spec.seed, 1, scan])
        weights, profiles = [], []
        for spot in spots:
            pos = spot.at(scan)
            sig = _sigmas(instrument, spec, pos[0])
            weights.append(_omega_weights(instrument, pos[2], spec.sigma_frames))
            profiles.append([_profile(t, e, pos, sig) for t, e in maps])
        handles = _open_scan(spec, instrument, raw, scan)
        t0 = time.monotonic()
        for frame in range(n):
            stored = {}
            for p, panel in enumerate(instrument.panels):
                mu = np.full(maps[p][0].shape, spec.background)
                for w, prof in zip(weights, profiles, strict=True):
                    if w[frame] > 1e-6:
                        mu += spec.amplitude * w[frame] * prof[p]
                image = np.minimum(rng.poisson(mu), 65535).astype(np.uint16)
                stored_image = np.zeros(panel.min_stored_shape, dtype=np.uint16)
                panel.store(image, stored_image)
                stored[panel.name] = stored_image
            _write_frame(spec, raw, handles, scan, frame, stored)
            written += 1
            if interval:
                delay = t0 + (frame + 1) * interval - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        _close_scan(spec, handles)
    return written


def _open_scan(spec, instrument, raw: Path, scan: int) -> dict:
    if spec.format != "hdf5":
        return {}
    import h5py

    handles = {}
    for panel in instrument.panels:
        path = raw / HDF5_FILES.format(panel=panel.name, scan=scan)
        f = h5py.File(path, "w")
        shape = panel.min_stored_shape
        f.create_dataset(
            DATASET,
            shape=(instrument.frames_per_scan, *shape),
            dtype=np.uint16,
            chunks=(1, *shape),
        )
        handles[panel.name] = (path, f)
    return handles


def _write_frame(spec, raw: Path, handles: dict, scan: int, frame: int, stored: dict) -> None:
    for name, image in stored.items():
        if spec.format == "hdf5":
            handles[name][1][DATASET][frame] = image
        else:
            _save_npy(raw / NPY_FILES.format(scan=scan, panel=name, frame=frame), image)


def _close_scan(spec, handles: dict) -> None:
    for path, f in handles.values():
        f.close()
        if spec.marker:
            Path(str(path) + ".done").touch()


def _write_direct(spec, instrument, grids, spots, direct: Path) -> None:
    n = instrument.frames_per_scan
    for scan in range(spec.scans):
        rng = np.random.default_rng([spec.seed, 2, scan])
        for grid in grids:
            tth, eta = np.meshgrid(grid.tth_values(), grid.eta_values())
            mine = [s for s in spots if s.region == grid.id]
            profiles = []
            for spot in mine:
                pos = spot.at(scan)
                sig = _sigmas(instrument, spec, pos[0])
                w = _omega_weights(instrument, pos[2], spec.sigma_frames)
                profiles.append((w, _profile(tth, eta, pos, sig)))
            for frame in omega_window(grid.frames[0], grid.frames[1], n):
                mu = np.full(tth.shape, spec.background)
                for w, prof in profiles:
                    mu += spec.amplitude * w[frame] * prof
                image = rng.poisson(mu).astype(np.float32)
                _save_npy(
                    direct / FRAME_PATTERN.format(region=grid.id, frame=frame, scan=scan), image
                )
