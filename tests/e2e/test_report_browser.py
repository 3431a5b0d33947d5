"""The report renders in a real headless Chromium: every figure loads, the page is not blank.

Needs a Chromium binary (Debian: ``apt-get install -y chromium``; or set
MPITRACK_CHROMIUM to one) and matplotlib; skips with the reason otherwise.
The page marks images that failed to load on <body data-broken-images=...>
(inline script, nothing fetched from anywhere); --dump-dom reads that back,
and a deliberately broken copy of the report proves the check can fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from mpitrack import store
from mpitrack.stats import report, synthetic

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

WINDOW = (1280, 2000)


def _chromium() -> str | None:
    given = os.environ.get("MPITRACK_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    binary = _chromium()
    if binary is None:
        pytest.skip(
            "no Chromium binary found: apt-get install -y chromium (or set MPITRACK_CHROMIUM)"
        )
    pytest.importorskip("matplotlib", reason="the report's figures need matplotlib (plots extra)")
    return binary


def _browse(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile.mkdir(parents=True, exist_ok=True)
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _body_attributes(dom: str) -> dict[str, str]:
    match = re.search(r"<body([^>]*)>", dom)
    assert match, f"no <body> in the dumped DOM: {dom[:300]!r}"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))


@pytest.fixture
def report_dir(database_url: str, run_name: str, tmp_path: Path) -> Path:
    out = tmp_path / "report"
    with store.connect(database_url, run_name, retries=0) as conn:
        synthetic.fill(conn, synthetic.SyntheticRun(regions=5, tracks=6, scans=15))
        options = report.ReportOptions(run="browser-test", max_region_plots=4)
        stats, _ = report.build_report(conn, out, options)
    assert sorted(stats) == list(range(15))
    return out


def test_report_loads_every_image_and_is_not_blank(chromium: str, report_dir: Path, tmp_path):
    index = report_dir / "index.html"
    n_images = len(re.findall(r"<img ", index.read_text()))
    assert n_images == 5 + 4  # five figures, four regions

    dom = _browse(chromium, tmp_path / "profile1", "--dump-dom", index.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = _body_attributes(dom.stdout)
    assert body.get("data-images") == str(n_images), body
    assert body.get("data-broken-images") == "0", body
    assert body.get("data-final") == "true"

    shot = tmp_path / "report.png"
    run = _browse(chromium, tmp_path / "profile2", f"--screenshot={shot}", index.as_uri())
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    not_white = (pixels < 0.95).any(axis=-1).mean()
    colours = len({tuple(p) for p in (pixels[::7, ::7] * 255).astype(int).reshape(-1, 3)})
    assert not_white > 0.10, f"screenshot nearly blank ({not_white:.1%} non-white)"
    assert colours > 100, f"screenshot has only {colours} colours: figures did not render"


def test_a_missing_figure_is_reported_broken(chromium: str, report_dir: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    shutil.copytree(report_dir, broken)
    (broken / "counts.png").unlink()
    dom = _browse(chromium, tmp_path / "profile3", "--dump-dom", (broken / "index.html").as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _body_attributes(dom.stdout).get("data-broken-images") == "1"
    assert "1 figure(s) failed to load" in dom.stdout


# ----------------------------------------------------------------------------- spot strips

SPOT_SCANS = 10


@pytest.fixture
def spot_report(tracked_experiment, tmp_path: Path) -> Path:
    """The final report of a tracked experiment: regions 0 (crossing) and 1 (merge_then_split)."""
    from mpitrack.roles.stats import ScanStatistics, serve
    from mpitrack.storage.postgres import PostgresStatsStore

    experiment = tracked_experiment(scans=SPOT_SCANS)
    for scan in range(SPOT_SCANS):
        experiment.track(scan)
    out = tmp_path / "spot-report"
    with store.connect(experiment.database_url, experiment.config.run, retries=0) as conn:
        role = ScanStatistics(PostgresStatsStore(conn), experiment.config, out)
        link = SimpleNamespace(next_scan=iter([*range(SPOT_SCANS), None]).__next__)
        assert serve(role, link) == SPOT_SCANS
    return out


def _near(pixels, rgb, tolerance: float = 0.04) -> int:
    """How many pixels have (about) this colour."""
    import numpy as np

    return int((np.abs(pixels - np.array(rgb) / 255.0) < tolerance).all(axis=-1).sum())


def test_the_spot_strips_render_in_a_browser(chromium: str, spot_report: Path, tmp_path: Path):
    from matplotlib.image import imread

    from mpitrack.stats.strips import CSS_COLOURS

    def rgb(name: str) -> tuple[int, int, int]:
        code = CSS_COLOURS[name]
        return tuple(int(code[i : i + 2], 16) for i in (1, 3, 5))

    index = spot_report / "index.html"
    dom = _browse(chromium, tmp_path / "profile4", "--dump-dom", index.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = _body_attributes(dom.stdout)
    assert body.get("data-broken-images") == "0", body
    assert 'href="spots/region_0.html"' in dom.stdout and 'id="look-overlaps"' in dom.stdout

    for region in (0, 1):
        page = spot_report / "spots" / f"region_{region}.html"
        n_images = len(re.findall(r"<img ", page.read_text()))
        dom = _browse(chromium, tmp_path / f"profile-r{region}", "--dump-dom", page.as_uri())
        assert dom.returncode == 0, dom.stderr[-2000:]
        body = _body_attributes(dom.stdout)
        assert body.get("data-images") == str(n_images) and n_images >= 2 * 2 * SPOT_SCANS
        assert body.get("data-broken-images") == "0", body
        for track in (1, 2):
            assert f'<th class="tr">track {track}</th>' in dom.stdout
            assert dom.stdout.count(f"<b>#{track}</b>") == SPOT_SCANS

        shot = tmp_path / f"region_{region}.png"
        profile = tmp_path / f"profile-s{region}"
        run = _browse(chromium, profile, f"--screenshot={shot}", page.as_uri())
        assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
        pixels = imread(shot)[..., :3]
        # The strips are on screen: detection outlines, track centres, the overlap borders
        # and the detected borders, in the colours the legend names.
        for name, least in (("outline", 200), ("mark", 100), ("overlap", 200), ("detected", 200)):
            assert _near(pixels, rgb(name)) >= least, (region, name, _near(pixels, rgb(name)))
        dark = (pixels.max(axis=-1) < 0.1).mean()
        assert dark > 0.03, f"region {region}: the spot images did not render ({dark:.1%} dark)"
