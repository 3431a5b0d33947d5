"""The report page: one self-contained index.html (inline CSS, no remote anything).

The top of the page answers the 3 a.m. questions (alerts, then a summary
table of the newest scan next to the previous and the first); the figures
follow. While the run goes on the page reloads itself every
``refresh_seconds``; the final page does not. A few lines of inline script
mark any figure that failed to load (visible to the reader, and to the
browser test through ``data-broken-images`` on <body>); the page fetches
nothing from anywhere else.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mpitrack.stats.glance import Alert
from mpitrack.stats.summary import AGE, INTENSITY, MAX_VARIANCE, ScanStats, relative_change


@dataclass(frozen=True)
class Figure:
    file: str  # relative to index.html
    title: str
    caption: str = ""


@dataclass(frozen=True)
class Page:
    run: str
    final: bool
    generated: str  # timestamp text
    stats: Sequence[ScanStats]
    widths: Sequence[str]
    alerts: Sequence[Alert]
    thresholds: str
    figures: Sequence[Figure]
    region_figures: Sequence[Figure] = field(default_factory=list)
    refresh_seconds: int = 30
    version: int = 0  # appended to image URLs so a reload never shows a cached old figure
    csv_file: str = "scan_stats.csv"
    notes: Sequence[str] = field(default_factory=list)
    spots: str = ""  # the spot gallery's HTML (spot_html.gallery), after the summary
    extra_css: str = ""


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.2em 2em;color:#222;
background:#fff;max-width:1100px}
h1{font-size:1.5em;margin:0 0 .2em} h2{font-size:1.15em;margin:1.4em 0 .4em;
border-bottom:1px solid #ddd}
.status{font-size:.95em;color:#555;margin-bottom:.8em}
.badge{display:inline-block;padding:.1em .6em;border-radius:.8em;color:#fff;font-weight:600}
.live{background:#c77700} .final{background:#2a7a2a}
ul.alerts{list-style:none;padding:0;margin:.4em 0}
ul.alerts li{padding:.45em .8em;margin:.25em 0;border-radius:4px;font-size:1.05em}
li.alert{background:#fde2e1;border-left:6px solid #c62828}
li.ok{background:#e3f4e3;border-left:6px solid #2a7a2a}
table{border-collapse:collapse;font-size:.92em} th,td{padding:.25em .7em;text-align:right}
th{background:#f1f1f1} td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.worse{color:#b71c1c;font-weight:600} .better{color:#1b5e20}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.88em;color:#555}
.regions{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:.6em}
.regions figure{margin:0} img.broken{outline:4px solid red;min-height:40px}
#broken{color:#c62828;font-weight:700}
.small{font-size:.85em;color:#666}
"""

# Marks images that failed to load; the spot pages (spot_html.py) use it too.
IMAGE_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, broken = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (!imgs[i].complete || imgs[i].naturalWidth === 0) {
      imgs[i].classList.add("broken"); broken++;
    }
  }
  document.body.setAttribute("data-images", String(imgs.length));
  document.body.setAttribute("data-broken-images", String(broken));
  if (broken) {
    document.getElementById("broken").textContent =
      broken + " figure(s) failed to load: reload the page.";
  }
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(value: float | int | None, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "int":
        return f"{int(value):d}"
    if kind == "pct":
        return f"{value:.1%}"
    if abs(value) >= 1e4:
        return f"{value:.3g}"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _change(new: float | None, old: float | None, worse_when: int) -> str:
    """A relative change cell, red when it goes the bad way (worse_when: +1 up, -1 down, 0 n/a)."""
    change = relative_change(new, old)
    if change is None:
        return "<td>–</td>"
    cls = ""
    if worse_when and abs(change) > 0.005:
        cls = "worse" if change * worse_when > 0 else "better"
    return f'<td class="{cls}">{change:+.1%}</td>'


Getter = Callable[[ScanStats], "float | int | None"]
# label, value, format, which way is bad news (+1 up, -1 down, 0 neither)
Row = tuple[str, Getter, str, int]


def _rows(widths: Sequence[str]) -> list[Row]:
    rows: list[Row] = [
        ("spots detected", lambda s: s.detected, "int", -1),
        ("live tracks", lambda s: s.live_tracks, "int", -1),
        ("births", lambda s: s.births, "int", 0),
        ("deaths", lambda s: s.deaths, "int", +1),
        ("missed detections", lambda s: s.missed, "int", +1),
        ("overlapping fraction", lambda s: s.overlap_fraction, "pct", +1),
    ]
    for q in widths:
        axis = q.removeprefix("width_")
        rows.append((f"median FWHM {axis} (voxels)", lambda s, q=q: s.distribution(q).p50, "f", +1))
        rows.append((f"IQR FWHM {axis}", lambda s, q=q: s.distribution(q).iqr, "f", +1))
    rows += [
        ("median intensity", lambda s: s.distribution(INTENSITY).p50, "f", -1),
        ("median largest variance (voxel²)", lambda s: s.distribution(MAX_VARIANCE).p50, "f", +1),
        ("median track age (scans)", lambda s: s.distribution(AGE).p50, "f", 0),
    ]
    return rows


def summary_table(stats: Sequence[ScanStats], widths: Sequence[str]) -> str:
    ordered = sorted(stats, key=lambda s: s.scan)
    if not ordered:
        return "<p>No scan has completed yet.</p>"
    new = ordered[-1]
    prev = ordered[-2] if len(ordered) > 1 else None
    first = ordered[0]
    head = (
        "<tr><th></th>"
        f"<th>first (scan {first.scan})</th>"
        + (f"<th>previous (scan {prev.scan})</th>" if prev else "")
        + f"<th>latest (scan {new.scan})</th>"
        + ("<th>vs previous</th>" if prev else "")
        + "<th>vs first</th></tr>"
    )
    body = []
    for label, get, kind, worse_when in _rows(widths):
        cells = [f"<td>{_e(label)}</td>", f"<td>{_fmt(get(first), kind)}</td>"]
        if prev:
            cells.append(f"<td>{_fmt(get(prev), kind)}</td>")
        cells.append(f"<td><b>{_fmt(get(new), kind)}</b></td>")
        if prev:
            cells.append(_change(get(new), get(prev), worse_when))
        cells.append(_change(get(new), get(first), worse_when))
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="summary">{head}{"".join(body)}</table>'


def render(page: Page) -> str:
    ordered = sorted(page.stats, key=lambda s: s.scan)
    span = f"scans {ordered[0].scan}–{ordered[-1].scan}" if ordered else "no scans yet"
    status = (
        '<span class="badge final">FINAL</span>'
        if page.final
        else f'<span class="badge live">LIVE</span> reloads every {page.refresh_seconds} s'
    )
    refresh = (
        "" if page.final else f'<meta http-equiv="refresh" content="{int(page.refresh_seconds)}">'
    )
    alerts = "".join(f'<li class="{_e(a.level)}">{_e(a.text)}</li>' for a in page.alerts)

    def figure(f: Figure) -> str:
        cap = f"<figcaption>{_e(f.caption)}</figcaption>" if f.caption else ""
        return (
            f'<figure><img src="{_e(f.file)}?v={page.version}" alt="{_e(f.title)}">{cap}</figure>'
        )

    sections = "".join(f"<h2>{_e(f.title)}</h2>{figure(f)}" for f in page.figures)
    regions = ""
    if page.region_figures:
        regions = (
            "<h2>Track trajectories per region</h2>"
            '<p class="small">Filled dots: detections; hollow: missed (predicted); '
            "red rings: overlapping detections.</p>"
            f'<div class="regions">{"".join(figure(f) for f in page.region_figures)}</div>'
        )
    notes = "".join(f'<p class="small">{_e(n)}</p>' for n in page.notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mpitrack {_e(page.run)}: {"final" if page.final else "live"} report</title>
<style>{_CSS}{page.extra_css}</style></head>
<body data-final="{str(page.final).lower()}">
<h1>mpitrack run “{_e(page.run)}”</h1>
<div class="status">{status} · {_e(span)} · generated {_e(page.generated)}
 · <a href="{_e(page.csv_file)}">{_e(page.csv_file)}</a> <span id="broken"></span></div>
<ul class="alerts">{alerts}</ul>
<p class="small">{_e(page.thresholds)}</p>
<h2>Summary</h2>
{summary_table(ordered, page.widths)}
{page.spots}
{sections}
{regions}
{notes}
<script>{IMAGE_CHECK_SCRIPT}</script>
</body></html>
"""
