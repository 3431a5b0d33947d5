"""The report page: summary first, live pages reload and final pages do not, text is escaped."""

from __future__ import annotations

import re

from mpitrack.stats import glance, html
from mpitrack.stats.summary import Distribution, ScanStats

WIDTHS = ("width_omega", "width_eta", "width_tth")


def _scan(scan: int, median: float, detected: int = 10) -> ScanStats:
    d = Distribution(detected, median, median - 1, median - 0.5, median, median + 0.5, median + 1)
    return ScanStats(
        scan, 3, 12, detected, 12 - detected, 1, 0, 0, distributions={q: d for q in WIDTHS}
    )


def _page(final: bool, stats: list[ScanStats]) -> str:
    return html.render(
        html.Page(
            run="beam<time>",
            final=final,
            generated="now",
            stats=stats,
            widths=WIDTHS,
            alerts=glance.alerts(stats, WIDTHS),
            thresholds=glance.describe(),
            figures=[html.Figure("widths.png", "Spot widths", "bands")],
            region_figures=[html.Figure("regions/region_3.png", "region 3")],
            version=7,
        )
    )


def test_live_page_reloads_and_final_page_does_not():
    stats = [_scan(0, 2.0), _scan(1, 2.1)]
    live, final = _page(False, stats), _page(True, stats)
    assert '<meta http-equiv="refresh" content="30">' in live
    assert "http-equiv" not in final
    assert "LIVE" in live and "FINAL" in final
    assert 'data-final="true"' in final


def test_summary_table_comes_before_the_figures_and_compares_scans():
    text = _page(True, [_scan(0, 2.0), _scan(1, 2.2), _scan(2, 2.42, detected=11)])
    assert text.index('id="summary"') < text.index("<figure>")
    assert "first (scan 0)" in text and "previous (scan 1)" in text and "latest (scan 2)" in text
    row = re.search(r"<tr><td>median FWHM omega \(voxels\)</td>(.*?)</tr>", text).group(1)
    assert "2.420" in row and "+10.0%" in row and "+21.0%" in row
    # Widths growing is bad news: coloured as such.
    assert 'class="worse">+10.0%' in row


def test_text_is_escaped_and_nothing_remote_is_referenced():
    text = _page(False, [_scan(0, 2.0)])
    assert "beam&lt;time&gt;" in text and "beam<time>" not in text
    assert 'src="widths.png?v=7"' in text and 'src="regions/region_3.png?v=7"' in text
    assert not re.search(r"(src|href)=\"(https?:)?//", text)


def test_empty_run_renders():
    text = _page(False, [])
    assert "No scan has completed yet." in text
