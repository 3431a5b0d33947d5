"""Synthetic experiments with ground truth (see scenarios.py for the scenarios).

`plan` turns an ExperimentSpec into scenario instances and ground truth without
I/O; `write_experiment` / `simulate` write frames, `truth.json` and a config.
"""

from mpitrack.sim.scenarios import SCENARIO_NAMES, SimParams, region_scenario
from mpitrack.sim.truth import GroundTruth, TruthError, read_truth
from mpitrack.sim.writer import ExperimentSpec, SimSummary, plan, simulate, write_experiment

__all__ = [
    "SCENARIO_NAMES",
    "ExperimentSpec",
    "GroundTruth",
    "SimParams",
    "SimSummary",
    "TruthError",
    "plan",
    "read_truth",
    "region_scenario",
    "simulate",
    "write_experiment",
]
