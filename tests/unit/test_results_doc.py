"""docs/results.md and the feature registry cannot drift from the code.

The registry (mpitrack/results/keys.py) must name exactly the keys that the
code writes: the keys of a detected spot (track/features.py, every optional
input given) and the keys the tracker adds to a row (track/mht/rows.py, read
from its source). The doc's tables are the registry's rendering.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from mpitrack.results import doc, keys, views
from mpitrack.track import features as features_module
from mpitrack.track.mht import rows as rows_module

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "results.md"
AXES = ("eta", "tth")


def detected_spot_features() -> dict:
    """One spot's features with every optional input, as detection writes them."""
    n = 1
    return features_module.build_spots(
        positions=np.array([[3.0, 10.0, 12.0]]),
        covariances=np.diag([1.0, 2.0, 3.0])[None],
        intensities=np.array([500.0]),
        peaks=np.array([40.0]),
        n_voxels=np.array([30]),
        bboxes=np.array([[[1, 5], [7, 13], [9, 15]]]),
        shape=(11, 35, 35),
        axes=AXES,
        noise=2.0,
        origin={"omega": 10.0, "eta": -5.0, "tth": 7.0},
        step={"omega": 0.25, "eta": 0.1, "tth": 0.01},
        position_errors=np.full((n, 3), 0.1),
        intensity_errors=np.full(n, 3.0),
        masked_voxels=np.zeros(n, dtype=int),
    )[0].features


def tracker_added_keys() -> set[str]:
    """Feature keys that track/mht/rows.py writes: ``feats[KEY] = ...`` and dict literals
    assigned to ``feats``."""
    tree = ast.parse(Path(rows_module.__file__).read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Subscript)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "feats"
                    and isinstance(target.slice, ast.Constant)
                ):
                    found.add(target.slice.value)
                if (
                    isinstance(target, ast.Name)
                    and target.id == "feats"
                    and isinstance(node.value, ast.Dict)
                ):
                    found.update(k.value for k in node.value.keys if isinstance(k, ast.Constant))
    return found


def test_the_doc_is_the_rendering_of_the_registry():
    text = DOC.read_text(encoding="utf-8")
    assert doc.render(text) == text, (
        "docs/results.md is stale: run python -m mpitrack.results.doc docs/results.md"
    )


def test_render_replaces_a_stale_table_and_refuses_a_missing_one():
    text = DOC.read_text(encoding="utf-8")
    stale = text.replace("| `fwhm` |", "| `fwhm_old` |")
    assert stale != text and doc.render(stale) == text
    without = text.replace("<!-- BEGIN GENERATED: features -->", "")
    with pytest.raises(ValueError, match="features"):
        doc.render(without)


def test_the_registry_names_exactly_the_keys_the_code_writes():
    detected = set(detected_spot_features())
    added = tracker_added_keys()
    assert {"fragments", "overlap_with", "predicted", "measured_position"} <= added
    assert detected | added == keys.FEATURE_KEYS, (
        f"missing from the registry: {sorted((detected | added) - keys.FEATURE_KEYS)}; "
        f"no longer written: {sorted(keys.FEATURE_KEYS - detected - added)}"
    )


def test_the_registry_shapes_match_the_values():
    values = detected_spot_features()
    names = {"omega", *AXES}
    for spec in keys.FEATURES:
        if spec.key not in values:
            continue
        value = values[spec.key]
        if spec.shape in (keys.PER_AXIS, keys.PER_AXIS_FLAG, keys.PER_AXIS_RANGE):
            assert set(value) == names, spec.key
        elif spec.shape == keys.SCALAR:
            assert isinstance(value, int | float) and not isinstance(value, bool), spec.key
        elif spec.shape == keys.MATRIX:
            assert np.shape(value) == (3, 3), spec.key
        elif spec.shape == keys.VECTOR:
            assert np.shape(value) == (3,), spec.key
    assert set(values["physical"]) == set(keys.PHYSICAL_PARTS)
    assert values["physical"]["position"]["eta"] == pytest.approx(-5.0 + 0.1 * 10.0)


def test_view_columns_follow_the_axes_and_refuse_unsafe_names():
    names = [c.name for c in views.view_columns(("omega", "chi", "two_theta"))]
    assert {"fwhm_chi", "fwhm_two_theta", "position_omega", "intensity"} <= set(names)
    assert not any(name.endswith("_eta") for name in names)
    assert len(names) == len(set(names))
    for bad in (
        ("omega", "eta", "tth; DROP TABLE x"),
        ("omega", "eta", "eta"),
        ("eta", "tth", "x"),
    ):
        with pytest.raises(ValueError):
            views.check_axes(bad)
