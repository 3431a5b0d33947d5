"""Ground truth of a synthetic experiment: what the tracker should have found.

One record per (region, scan, true track id) while that spot is alive, with
its centre (region-local voxel units; omega is the index inside the region's
window, the tracker's convention), integrated intensity, widths (Gaussian
sigmas per axis), and two flags:

overlapping
    The spot shares the scan with another visible spot of the same region whose
    normalised centre distance ``|| (c_i - c_j) / (sigma_i + sigma_j) ||``
    (per-axis division, Euclidean norm) is below ``overlap_distance`` (default
    1.0). Two equal Gaussians whose centres are closer than the sum of their
    sigmas, i.e. 2 sigma, along an axis show a single maximum (the Sparrow
    limit): a detector cannot split them, so one measured spot is explained by
    both tracks, which is exactly the tracker's ``overlapping`` flag.
visible
    The spot's centre lies inside the region volume (every axis within
    [-0.5, n - 0.5]). Only visible records count as truth in evaluation.

The file is JSON, one record per line so that people can read and grep it, with
the simulation parameters, the seed, per-region scenario names and a
fingerprint (region ids and windows, scans, region shape) that `mpitrack
evaluate` checks against the run it scores.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mpitrack.sim.scenarios import SimParams, TrueSpot

# The ground-truth file's format name and version, checked when it is read.
FORMAT = "mpitrack-ground-truth"
VERSION = 1


@dataclass(frozen=True)
class TruthRecord:
    region_id: int
    scan: int
    track_id: int
    position: tuple[float, float, float]  # omega, axis1, axis2
    intensity: float
    widths: tuple[float, float, float]
    overlapping: bool
    visible: bool


@dataclass(frozen=True)
class TruthRegion:
    id: int
    scenario: str
    frames: tuple[int, int]


@dataclass(frozen=True)
class GroundTruth:
    run: str
    seed: int
    params: SimParams
    first_scan: int
    last_scan: int
    regions: tuple[TruthRegion, ...]
    records: tuple[TruthRecord, ...]

    @property
    def fingerprint(self) -> dict[str, Any]:
        """What a run must match for this truth to apply to it."""
        return {
            "regions": {str(r.id): list(r.frames) for r in self.regions},
            "scans": [self.first_scan, self.last_scan],
            "region_shape": list(self.params.region_shape),
            "frames_per_scan": self.params.frames_per_scan,
            "axes": list(self.params.axes),
        }

    def scenario_of(self, region_id: int) -> str:
        for region in self.regions:
            if region.id == region_id:
                return region.scenario
        raise KeyError(region_id)


def overlap_flags(spots: list[TrueSpot], visible: list[bool], threshold: float) -> list[bool]:
    """Per spot: is it within `threshold` normalised distance of another visible spot."""
    flags = [False] * len(spots)
    for i in range(len(spots)):
        for j in range(i + 1, len(spots)):
            if not (visible[i] and visible[j]):
                continue
            a, b = spots[i], spots[j]
            d = float(np.linalg.norm((a.position - b.position) / (a.sigma + b.sigma)))
            if d < threshold:
                flags[i] = flags[j] = True
    return flags


def is_visible(spot: TrueSpot, shape: tuple[int, int, int]) -> bool:
    p = spot.position
    return bool(np.all(p >= -0.5) and np.all(p <= np.asarray(shape) - 0.5))


def region_records(
    region_id: int, scan: int, spots: tuple[TrueSpot, ...], params: SimParams
) -> list[TruthRecord]:
    """The truth records of one (region, scan)."""
    visible = [is_visible(s, params.region_shape) for s in spots]
    flags = overlap_flags(list(spots), visible, params.overlap_distance)
    return [
        TruthRecord(
            region_id=region_id,
            scan=scan,
            track_id=s.track_id,
            position=tuple(round(float(x), 4) for x in s.position),  # type: ignore[arg-type]
            intensity=round(float(s.intensity), 3),
            widths=tuple(round(float(x), 4) for x in s.sigma),  # type: ignore[arg-type]
            overlapping=flag,
            visible=vis,
        )
        for s, flag, vis in zip(spots, flags, visible, strict=True)
    ]


def _record_json(rec: TruthRecord, axes: tuple[str, str]) -> dict[str, Any]:
    names = ("omega", *axes)
    return {
        "region_id": rec.region_id,
        "scan": rec.scan,
        "track_id": rec.track_id,
        "position": dict(zip(names, rec.position, strict=True)),
        "intensity": rec.intensity,
        "widths": dict(zip(names, rec.widths, strict=True)),
        "overlapping": rec.overlapping,
        "visible": rec.visible,
    }


def dumps(truth: GroundTruth) -> str:
    header = {
        "format": FORMAT,
        "version": VERSION,
        "run": truth.run,
        "seed": truth.seed,
        "fingerprint": truth.fingerprint,
        "params": truth.params.to_dict(),
        "overlap_definition": (
            "||(c_i - c_j) / (sigma_i + sigma_j)|| < params.overlap_distance "
            "between two visible spots of the same region and scan"
        ),
        "regions": [
            {"id": r.id, "scenario": r.scenario, "frames": list(r.frames)} for r in truth.regions
        ],
    }
    head = json.dumps(header, indent=2)[:-2]  # drop the closing "\n}"
    lines = [json.dumps(_record_json(r, truth.params.axes)) for r in truth.records]
    return head + ',\n  "records": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"


def write_truth(path: Path, truth: GroundTruth) -> None:
    """Write atomically (temporary name in the same directory, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps(truth), encoding="utf-8")
    os.replace(tmp, path)


class TruthError(ValueError):
    """The ground-truth file is unreadable or not a ground truth."""


def read_truth(path: Path) -> GroundTruth:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TruthError(f"{path}: no such ground-truth file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TruthError(f"{path}: not a readable ground-truth file ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise TruthError(f"{path}: not an mpitrack ground-truth file (format != {FORMAT!r})")
    if raw.get("version") != VERSION:
        raise TruthError(f"{path}: unsupported ground-truth version {raw.get('version')!r}")
    try:
        params = SimParams.from_dict(raw["params"])
        names = ("omega", *params.axes)
        regions = tuple(
            TruthRegion(
                int(r["id"]), str(r["scenario"]), (int(r["frames"][0]), int(r["frames"][1]))
            )
            for r in raw["regions"]
        )
        records = tuple(
            TruthRecord(
                region_id=int(r["region_id"]),
                scan=int(r["scan"]),
                track_id=int(r["track_id"]),
                position=tuple(float(r["position"][n]) for n in names),  # type: ignore[arg-type]
                intensity=float(r["intensity"]),
                widths=tuple(float(r["widths"][n]) for n in names),  # type: ignore[arg-type]
                overlapping=bool(r["overlapping"]),
                visible=bool(r["visible"]),
            )
            for r in raw["records"]
        )
        first, last = raw["fingerprint"]["scans"]
        return GroundTruth(
            run=str(raw["run"]),
            seed=int(raw["seed"]),
            params=params,
            first_scan=int(first),
            last_scan=int(last),
            regions=regions,
            records=records,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise TruthError(
            f"{path}: malformed ground-truth file ({type(exc).__name__}: {exc})"
        ) from None
