"""Spot detection (placeholder until the detection work lands)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectParams:
    """Detection settings (the `detection:` section of the config)."""

    threshold_sigma: float = 5.0
    min_voxels: int = 3
