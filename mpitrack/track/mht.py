"""Multiple Hypothesis Tracking (placeholder until the MHT work lands)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class MHTParams:
    """MHT settings (the `tracking:` section of the config)."""

    n_scan: int = 3
