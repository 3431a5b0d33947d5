"""Detection on real detector data: 30 spots of an ESRF ID11 silicon scan (``si-id11``).

The data live outside the repository, in ``shared/data/si-id11`` next to it
(``../shared/data/si-id11`` from the repository root, or from the directory
that holds the worktrees), or wherever ``MPITRACK_SI_ID11`` points; see its
README.md. Each volume holds one real spot whose centre ImageD11 (the peer)
measured on the same pixels. The target (issue 13): at least 29 of the 30
volumes give one spot there, not split in two (a spot that drifts diagonally
between omega slices must stay whole), centred within 0.15 voxel of the
peer's centre. Some volumes also hold separate weak peaks (under 0.2 % of the
intensity, 6 or more voxels away) that both detectors find; they are not the
spot and are not counted against it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from mpitrack.track.detect import detect

ROOT = Path(__file__).resolve().parents[2]
NEAR = 3.0  # voxels: a spot this close to the peer's centre is (a piece of) the same spot
CENTRE_TOLERANCE = 0.15
REQUIRED = 29


def data_directory() -> Path | None:
    """MPITRACK_SI_ID11, else shared/data/si-id11 beside the repository or above it."""
    explicit = os.environ.get("MPITRACK_SI_ID11")
    if explicit:
        return Path(explicit)
    for base in (ROOT.parent, ROOT.parent.parent):
        candidate = base / "shared" / "data" / "si-id11"
        if (candidate / "peaks.json").is_file():
            return candidate
    return None


DATA = data_directory()
pytestmark = pytest.mark.skipif(
    DATA is None or not (DATA / "peaks.json").is_file(),
    reason="real data si-id11 not found: looked for shared/data/si-id11 beside "
    f"{ROOT} and its parent, and MPITRACK_SI_ID11 is not set",
)


def test_each_real_spot_is_one_spot_at_the_peers_centre() -> None:
    assert DATA is not None
    peaks = json.loads((DATA / "peaks.json").read_text())["volumes"]
    assert len(peaks) == 30
    good, report = 0, []
    for entry in peaks:
        volume = np.load(DATA / f"{entry['name']}.npy", allow_pickle=False)
        peer = np.asarray(entry["peer_centre_voxel"])
        spots = detect(volume).spots
        distances = sorted(float(np.linalg.norm(s.position - peer)) for s in spots)
        near = [d for d in distances if d <= NEAR]
        ok = len(near) == 1 and near[0] <= CENTRE_TOLERANCE
        good += ok
        report.append(f"{entry['name']}: {len(near)} spot(s) near the peer, distances {distances}")
    assert good >= REQUIRED, "\n".join(report)
