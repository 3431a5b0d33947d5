"""Checkpoints of released formats keep working, and a layout change needs a version bump.

tests/data/checkpoints holds checkpoints written by earlier mpitrack versions
(see its README). Format 1 is refused with a clear error; format 2 loads and
resumes exactly like the same state written in the current format.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from mpitrack.sim.render import render_volume
from mpitrack.sim.writer import ExperimentSpec, config_dict, plan
from mpitrack.track import checkpoint
from mpitrack.track.checkpoint import CheckpointVersionError
from mpitrack.track.detect import DetectParams
from mpitrack.track.mht import MHTParams
from mpitrack.track.tracker import RegionTracker

DATA = Path(__file__).resolve().parents[1] / "data" / "checkpoints"

# What each format stores: array names, dtypes and trailing shapes, and the
# header's keys. Changing the layout without bumping FORMAT_VERSION fails here.
LAYOUTS = {3: "ce030d45f7c37c3f4ca79775126191f6cb294406c73bdd0c49f244d820445943"}


def _layout(data: bytes) -> str:
    npz = np.load(io.BytesIO(data), allow_pickle=False)
    header = json.loads(bytes(npz["header"]).decode())
    arrays = sorted(
        (name, str(npz[name].dtype), list(npz[name].shape[1:]))
        for name in npz.files
        if name != "header"
    )
    desc = {"arrays": arrays, "header": sorted(header), "window": sorted(header["window"][0])}
    return hashlib.sha256(json.dumps(desc).encode()).hexdigest()


def _crossing() -> tuple[RegionTracker, list[np.ndarray], DetectParams, tuple[str, str]]:
    """The region the fixtures were written from (crossing, seed 4) and its volumes."""
    spec = ExperimentSpec(out_dir=Path("."), scenarios=("crossing",), regions=1, scans=20, seed=4)
    exp = plan(spec)
    detect_params = DetectParams(**config_dict(exp)["detection"])
    axes = (spec.params.axes[0], spec.params.axes[1])
    volumes = [
        render_volume(spec.params, exp.scenarios[0].scans[i], np.random.default_rng([4, 0, i, 1]))
        for i in range(20)
    ]
    return RegionTracker(detect_params, MHTParams(), axes), volumes, detect_params, axes


def test_format_1_is_refused_with_a_clear_error() -> None:
    data = (DATA / "format1.npz").read_bytes()
    assert checkpoint.read_format_version(data) == 1
    with pytest.raises(CheckpointVersionError, match=r"format version 1.*re-run the region"):
        RegionTracker.from_checkpoint(data, None, MHTParams())


def test_format_2_loads_and_resumes_like_the_current_format() -> None:
    _, volumes, detect_params, axes = _crossing()
    old = (DATA / "format2.npz").read_bytes()
    assert checkpoint.read_format_version(old) == 2
    from_old = RegionTracker.from_checkpoint(old, detect_params, MHTParams(), axes)
    assert from_old.last_scan == 9
    state = checkpoint.decode_state(old)
    assert any(rec.groups for rec in state.window), "the fixture should hold an overlap"
    assert all(rec.centres.shape == (len(rec.features), 3) for rec in state.window)
    upgraded = from_old.to_checkpoint()
    assert checkpoint.read_format_version(upgraded) == checkpoint.FORMAT_VERSION
    from_new = RegionTracker.from_checkpoint(upgraded, detect_params, MHTParams(), axes)
    for scan in range(10, 20):
        assert from_old.step(scan, volumes[scan]) == from_new.step(scan, volumes[scan])
    assert from_old.to_checkpoint() == from_new.to_checkpoint()


def test_the_layout_of_the_current_format_is_pinned() -> None:
    tracker, volumes, _, _ = _crossing()
    for scan in range(12):
        tracker.step(scan, volumes[scan])
    found = _layout(tracker.to_checkpoint())
    assert LAYOUTS.get(checkpoint.FORMAT_VERSION) == found, (
        f"checkpoint layout {found} is not the one pinned for format "
        f"{checkpoint.FORMAT_VERSION}: bump FORMAT_VERSION (and keep reading the old one)"
    )
