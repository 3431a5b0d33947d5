"""The score terms: log-likelihood ratios of one scan's decisions against "that spot was clutter".

A leaf's score is the sum of its open entries' scores:

- persist: ``log Pd + log N(z) - log clutter + intensity term``;
- miss: ``log(1 - Pd)``, plus ``log(death probability)`` for the miss that
  ends the track;
- birth: ``log(birth density / clutter density)``;
- overlap: ``log Pd + log(overlap probability)`` per member, plus the group's
  joint ratio ``log N(z | group centroid) - log clutter + intensity(sum)``
  shared among the k members;
- fragments: ``log Pd + log(fragment probability) - 2 log clutter`` plus the
  pieces' likelihoods.

The intensity term is a Gaussian in log intensity that saturates at
``intensity_cap_sigma``: intensities may jump.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpitrack.track.mht.params import MHTParams


@dataclass(frozen=True)
class ScoreModel:
    """The constant parts of every score, from the tracking parameters."""

    log_pd: float
    log_miss: float
    log_death: float
    log_clutter: float
    birth: float
    log_overlap: float
    log_fragment: float | None  # None: fragments are never hypothesised
    intensity_cap_sigma: float

    @classmethod
    def from_params(cls, params: MHTParams, clutter_density: float) -> ScoreModel:
        """The terms for one scan; clutter_density: false spots per voxel per scan."""
        pd = params.detection_probability
        return cls(
            log_pd=math.log(pd),
            log_miss=math.log(1.0 - pd),
            log_death=math.log(params.death_probability),
            log_clutter=math.log(clutter_density),
            birth=math.log(params.birth_density / clutter_density),
            log_overlap=math.log(params.overlap_probability),
            log_fragment=(
                math.log(params.fragment_probability) if params.fragment_probability > 0 else None
            ),
            intensity_cap_sigma=params.intensity_cap_sigma,
        )

    def intensity(self, measured: float, predicted: float, var: float) -> float:
        """log N(log(measured / predicted); 0, var), saturating at a few sigma."""
        r = math.log(max(measured, 1e-12) / max(predicted, 1e-12))
        z2 = min(r * r / var, self.intensity_cap_sigma**2)
        return -0.5 * (z2 + math.log(2.0 * math.pi * var))

    def intensity_many(
        self, measured: np.ndarray, predicted: np.ndarray, var: np.ndarray
    ) -> np.ndarray:
        """`intensity` for arrays of pairs."""
        r = np.log(np.maximum(measured, 1e-12) / np.maximum(predicted, 1e-12))
        z2 = np.minimum(r * r / var, self.intensity_cap_sigma**2)
        return -0.5 * (z2 + np.log(2.0 * math.pi * var))

    def miss(self, dies: bool) -> float:
        return self.log_miss + (self.log_death if dies else 0.0)
