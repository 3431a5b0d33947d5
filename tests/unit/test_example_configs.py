"""The configs in configs/ load as they are, and the demo config matches what the demo
simulates (so `scripts/demo` and `mpiexec -n 4 mpitrack run --config configs/demo.yaml` agree)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mpitrack.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MPITRACK = str(Path(sys.executable).parent / "mpitrack")


EXPERIMENTS = sorted(p for p in CONFIGS.glob("*.yaml") if "instrument" not in p.name)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    config = load_config(path, env={})
    assert config.regions and config.scans.last is not None


def test_the_example_instrument_loads() -> None:
    from mpitrack.detector.instrument import load_instrument

    instrument = load_instrument(CONFIGS / "instrument-example.yaml")
    assert instrument.panels and instrument.frames_per_scan > 0


def test_demo_config_matches_the_demo_simulation(tmp_path: Path) -> None:
    header = (CONFIGS / "demo.yaml").read_text()
    command = next(line for line in header.splitlines() if "mpitrack simulate" in line)
    args = command.split("mpitrack simulate", 1)[1].replace("\\", " ").split()
    scenario_line = next(line for line in header.splitlines() if "--scenario" in line)
    args += scenario_line.lstrip("# ").split()
    args[args.index("--out") + 1] = str(tmp_path / "demo")
    subprocess.run([MPITRACK, "-q", "simulate", *args], check=True, timeout=120)
    simulated = yaml.safe_load((tmp_path / "demo" / "experiment.yaml").read_text())
    demo = yaml.safe_load((CONFIGS / "demo.yaml").read_text())
    for key in ("run", "scans", "regions"):
        assert demo[key] == simulated[key], key
    for key in ("pattern", "frames_per_scan", "axes", "shape"):
        assert demo["frames"][key] == simulated["frames"][key], key
