"""The instrument file: detector panels and the omega axis, from YAML.

The instrument describes the physics (where each panel is, how big its pixels
are, how omega maps to frame numbers) and how the detector stores each panel
in its images (a flip and an offset into the stored frame). It is a separate
file from the experiment config because one instrument calibration serves many
experiments. Errors name the file and the key path, as the config's do
(``instrument.yaml: panels[1].distance: expected a number, got 'far'``).

Example (configs/instrument-example.yaml has two Dexela 2923 panels)::

    frames_per_scan: 1440
    omega_start: 0.0          # omega (degrees) at the start of frame 0
    panels:
      - name: ff1
        rows: 3888
        cols: 3072
        pixel_size: [0.0748, 0.0748]
        distance: 1000.0
        beam_center: [1944.0, 3200.0]
        tilt: [0.0, 0.0, 0.0]
        flip: none            # none | ud | lr | both: stored image -> panel pixels
        offset: [0, 0]        # (row, col) of the panel in the stored image
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mpitrack.config_parse import build_section, read_yaml  # the config loader's (same errors)
from mpitrack.detector.geometry import PanelGeometry

Flip = Literal["none", "ud", "lr", "both"]


@dataclass(frozen=True)
class PanelSpec:
    """One panel: its geometry and where it lies in the stored image.

    name: the panel's name; file templates and dataset paths use it as {panel}.
    rows, cols: the panel's pixels (after flip).
    pixel_size: (row pitch, column pitch) in mm.
    distance: sample to the beam's intersection with the panel plane, in mm.
    beam_center: (row, col) of that intersection in this panel's pixels (may be
        off the panel: that is how panels beside the beam are placed).
    tilt: degrees about lab x, y, z (in that order) around beam_center.
    flip: how stored pixels map to panel pixels: none, ud (rows reversed),
        lr (columns reversed), both.
    offset: (row, col) of the panel's block in the stored image, before the flip
        (for several panels stored side by side in one image).
    """

    name: str
    rows: int
    cols: int
    pixel_size: tuple[float, float]
    distance: float
    beam_center: tuple[float, float]
    tilt: tuple[float, float, float] = (0.0, 0.0, 0.0)
    flip: Flip = "none"
    offset: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        if min(self.offset) < 0:
            raise ValueError(f"offset {list(self.offset)} must be >= 0")
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '-', '_' or '.'")
        object.__setattr__(self, "_geometry", self._make_geometry())

    def _make_geometry(self) -> PanelGeometry:
        return PanelGeometry(
            name=self.name,
            rows=self.rows,
            cols=self.cols,
            pixel_size=self.pixel_size,
            distance=self.distance,
            beam_center=self.beam_center,
            tilt=self.tilt,
        )

    @property
    def geometry(self) -> PanelGeometry:
        return self._geometry  # type: ignore[attr-defined]

    def extract(self, stored: np.ndarray) -> np.ndarray:
        """The panel's pixels (a view) out of one stored 2D image."""
        r0, c0 = self.offset
        block = stored[r0 : r0 + self.rows, c0 : c0 + self.cols]
        if block.shape != (self.rows, self.cols):
            raise ValueError(
                f"panel {self.name}: stored image of shape {stored.shape} has no "
                f"{self.rows} x {self.cols} block at offset {list(self.offset)}"
            )
        if self.flip in ("ud", "both"):
            block = block[::-1, :]
        if self.flip in ("lr", "both"):
            block = block[:, ::-1]
        return block

    def store(self, panel: np.ndarray, stored: np.ndarray) -> None:
        """Inverse of ``extract``: put panel pixels into a stored image (for simulation)."""
        if self.flip in ("ud", "both"):
            panel = panel[::-1, :]
        if self.flip in ("lr", "both"):
            panel = panel[:, ::-1]
        r0, c0 = self.offset
        stored[r0 : r0 + self.rows, c0 : c0 + self.cols] = panel

    @property
    def min_stored_shape(self) -> tuple[int, int]:
        return self.offset[0] + self.rows, self.offset[1] + self.cols


@dataclass(frozen=True)
class Instrument:
    """The detector and the rotation axis (``source``: the file it came from).

    panels: the detector's panels; several may share one stored image (offsets).
    frames_per_scan: omega frames in one full 360 degree scan.
    omega_start: omega in degrees at the start of frame 0.
    omega_step: degrees per frame; null = 360 / frames_per_scan.
    """

    panels: tuple[PanelSpec, ...]
    frames_per_scan: int = 1440
    omega_start: float = 0.0
    omega_step: float | None = None
    source: str = "<instrument>"

    def __post_init__(self) -> None:
        if not self.panels:
            raise ValueError("at least one panel is required")
        if self.frames_per_scan < 1:
            raise ValueError(f"frames_per_scan {self.frames_per_scan} must be >= 1")
        names = [p.name for p in self.panels]
        if len(set(names)) != len(names):
            raise ValueError(f"panel names {names} must be distinct")
        if self.omega_step is not None and self.omega_step == 0:
            raise ValueError("omega_step must not be 0")

    @property
    def step(self) -> float:
        return self.omega_step if self.omega_step is not None else 360.0 / self.frames_per_scan

    def omega_position(self, omega_deg: float | np.ndarray) -> float | np.ndarray:
        """Continuous frame coordinate of omega (frame k's centre is k), modulo the scan."""
        f = (np.asarray(omega_deg, dtype=np.float64) - self.omega_start) / self.step - 0.5
        return np.mod(f + 0.5, self.frames_per_scan) - 0.5

    def frame_of(self, omega_deg: float) -> int:
        """The frame whose omega interval holds omega_deg."""
        return math.floor((omega_deg - self.omega_start) / self.step) % self.frames_per_scan

    def fingerprint(self) -> str:
        """Hash of everything that changes pixel positions (for sampler caches)."""
        data = [
            dataclasses.asdict(p) for p in self.panels
        ]  # offsets/flips do not change panel pixels, but keep them: cheap and safe
        blob = json.dumps(data, sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def instrument_from_dict(raw: Any, source: str = "<instrument>") -> Instrument:
    """Build and validate an Instrument from plain data; errors name source and key."""
    instrument = build_section(Instrument, raw, source, "")
    instrument = dataclasses.replace(instrument, source=source)
    return instrument


def load_instrument(path: str | os.PathLike[str]) -> Instrument:
    source = str(path)
    raw = read_yaml(path, "instrument")
    return instrument_from_dict(raw if raw is not None else {}, source)


def instrument_to_dict(instrument: Instrument) -> dict[str, Any]:
    """Plain data that ``instrument_from_dict`` reads back (for writing YAML)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    out: dict[str, Any] = {
        "frames_per_scan": instrument.frames_per_scan,
        "omega_start": instrument.omega_start,
        "omega_step": instrument.omega_step,
        "panels": [
            {f.name: plain(getattr(p, f.name)) for f in dataclasses.fields(p)}
            for p in instrument.panels
        ],
    }
    return out
