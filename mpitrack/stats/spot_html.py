"""The spot pages' HTML, pure: region pages with a strip per track, region lists, the gallery.

A strip cell shows two crops of its scan's sheet (strips.py), the maximum
projection along omega above the omega slice through the track's centre,
both centred on the track: the crop is an <img> of the whole sheet moved
inside a small box that hides the rest, so a sheet is one file per scan
that every track of the region shares, and revising a decision rewrites a
few lines of HTML, never an image. The decision is in the cell's border and
words (detected alone, overlapping, missed; revised since first shown; still
open to revision), its numbers in the cell's tooltip.

Pages are plain files with inline CSS; like index.html they fetch nothing
from anywhere else and mark images that fail to load.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mpitrack.stats.html import IMAGE_CHECK_SCRIPT
from mpitrack.stats.lookfirst import Look, RegionMetrics
from mpitrack.stats.spotrows import Cell, cell_flags, cell_state
from mpitrack.stats.strips import CSS_COLOURS, SheetLayout, crop_around, marker_offset

REGIONS_PER_LIST_PAGE = 500


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def region_file(region: int) -> str:
    """A region's page (its newest scans), relative to the spots directory."""
    return f"region_{region}.html"


def block_file(region: int, block: tuple[int, int]) -> str:
    """The page of one block of a region's scans."""
    return f"region_{region}_scans_{block[0]}-{block[1]}.html"


def list_file(page: int) -> str:
    return f"regions_{page}.html"


_C = CSS_COLOURS
STRIP_CSS = f"""
table.strip{{border-collapse:separate;border-spacing:4px 2px;font-size:.78em}}
table.strip th{{font-weight:600;text-align:left;white-space:nowrap;background:none}}
table.strip th.tr{{padding-right:.5em;vertical-align:middle}}
td.c{{vertical-align:top;padding:0;line-height:1.25}}
.t{{position:relative;overflow:hidden;border:2px solid {_C["detected"]};margin-bottom:2px;
background:#eee}}
.t img{{position:absolute;max-width:none;border:0}}
.t i{{position:absolute;width:9px;height:9px;margin:-5px 0 0 -5px;
background:linear-gradient({_C["mark"]},{_C["mark"]}) center/1px 100% no-repeat,
linear-gradient({_C["mark"]},{_C["mark"]}) center/100% 1px no-repeat}}
td.ovl .t{{border-color:{_C["overlap"]}}}
td.miss .t{{border:2px dashed {_C["missed"]}}} td.miss .t i{{opacity:.6}}
td.nodata .t{{background:#e8e8e8}}
td.c b{{font-weight:600}} td.ovl .w{{color:{_C["overlap"]};font-weight:600}}
td.miss .w{{color:#777}}
span.rev{{color:{_C["revised"]};font-weight:700}} span.open{{color:{_C["open"]}}}
td.rev .t{{box-shadow:0 0 0 2px {_C["revised"]}}}
td.open .t{{outline:1px dotted {_C["open"]};outline-offset:1px}}
.key span{{display:inline-block;padding:0 .4em;margin-right:.4em;border:2px solid;
border-radius:2px}}
.look h3{{font-size:1em;margin:.7em 0 .25em}} .look h3 small{{font-weight:400;color:#666}}
.cards{{display:flex;flex-wrap:wrap;gap:.5em}}
a.card{{display:block;width:112px;font-size:.78em;color:#222;text-decoration:none;
border:1px solid #ddd;padding:3px;border-radius:4px}}
a.card span{{display:block;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}}
a.card:hover{{border-color:#888}}
.thumb{{position:relative;overflow:hidden;background:#000;margin-bottom:3px}}
.thumb img{{position:absolute;left:0;top:0;max-width:none;border:0}}
.pager a,.pager b{{margin-right:.5em}}
"""

_PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1em 1.5em;color:#222}
h1{font-size:1.35em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.2em 0 .4em}
.small{font-size:.85em;color:#555} img.broken{outline:4px solid red;min-height:20px}
#broken{color:#c62828;font-weight:700}
table.list{border-collapse:collapse;font-size:.9em} table.list td,table.list th{padding:.2em .6em;
text-align:right} table.list th{background:#f1f1f1} table.list td:nth-child(2){text-align:left}
table.list tr:nth-child(even) td{background:#fafafa}
"""


def _page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_PAGE_CSS}{STRIP_CSS}</style></head>
<body>
{body}
<script>{IMAGE_CHECK_SCRIPT}</script>
</body></html>
"""


def legend(crop: int) -> str:
    return (
        '<p class="small key">'
        f'<span style="border-color:{_C["detected"]}">detected</span>'
        f'<span style="border-color:{_C["overlap"]}">overlapping</span>'
        f'<span style="border:2px dashed {_C["missed"]}">missed (predicted)</span>'
        f'<span class="rev" style="border-color:{_C["revised"]}">rev: revised since first shown'
        "</span>"
        f'<span class="open" style="border:1px dotted {_C["open"]}">open: may still be revised'
        "</span></p>"
        '<p class="small">ovl+N: the spot is shared with track N and the two centres are too '
        "close to tell apart; shr+N: one detected blob holds both tracks but their centres are "
        "resolved; miss: not detected, the cross is the prediction. "
        "Each cell: above, the maximum projection of the region volume along "
        "omega; below, the omega slice through the track's centre (ω = its index in the "
        f"region's window); both {crop} × {crop} voxels around the track's centre (cross), "
        "rows the first frame axis, columns the second. Yellow outlines: every spot detection "
        "found in that scan. Each scan's images are scaled to its own brightest voxel "
        "(asinh stretch). Hover a cell for its numbers.</p>"
    )


def _tooltip(cell: Cell, axes: Sequence[str]) -> str:
    row = cell.row
    what = (
        ("overlapping" if row.overlapping else "detected")
        if row.detected
        else ("predicted through unusable data" if row.unusable else "missed (predicted)")
    )
    parts = [f"track {row.track}, scan {row.scan}: {what}"]
    if row.overlap_with:
        parts.append("shares its spot with track " + ", ".join(map(str, row.overlap_with)))
    parts.append(", ".join(f"{a} {p:.2f}" for a, p in zip(axes, row.position, strict=False)))
    if row.fwhm is not None:
        parts.append("FWHM " + " × ".join(f"{w:.2f}" for w in row.fwhm))
    if cell.revised:
        parts.append("revised since first shown")
    if cell.open:
        parts.append("open: a later commit may still revise it")
    return "; ".join(parts)


def _tile(src: str, layout: SheetLayout, image: int, cell: Cell, crop: int) -> str:
    box = crop_around(cell.row.position, layout, crop)
    k = layout.scale
    left = layout.left(image) + box.first2 * k
    top = box.first1 * k
    mr, mc = marker_offset(cell.row.position, box, k)
    return (
        f'<div class="t" style="width:{box.size2 * k}px;height:{box.size1 * k}px">'
        f'<img src="{_e(src)}" alt="" style="left:-{left}px;top:-{top}px">'
        f'<i style="left:{mc}px;top:{mr}px"></i></div>'
    )


def strip_cell(
    cell: Cell, layout: SheetLayout | None, src: str, crop: int, axes: Sequence[str]
) -> str:
    """One <td>: the two crops and the words, or a grey box when the scan has no sheet."""
    state = cell_state(cell)
    classes = ["c", {"detected": "det", "overlap": "ovl", "missed": "miss"}[state]]
    if cell.revised:
        classes.append("rev")
    if cell.open:
        classes.append("open")
    if layout is None:
        classes.append("nodata")
        width = crop * 3
        size = f"width:{width}px;height:{width}px"
        tiles = f'<div class="t" style="{size}"></div><div class="t" style="{size}"></div>'
        omega = ""
    else:
        slice_image = layout.slice_image(cell.row.position[0])
        width = crop_around(cell.row.position, layout, crop).size2 * layout.scale
        tiles = _tile(src, layout, 0, cell, crop) + _tile(src, layout, slice_image, cell, crop)
        omega = f" ω{slice_image - 1}"
    decision, history = cell_flags(cell)
    words = f"<b>#{cell.row.track}</b>{omega}"
    if decision:
        words += f' <span class="w">{_e(decision.lower())}</span>'
    for word in history.split():
        words += f' <span class="{word.lower()}">{word.lower()}</span>'
    return (
        f'<td class="{" ".join(classes)}" style="width:{width + 4}px" '
        f'title="{_e(_tooltip(cell, axes))}">{tiles}{words}</td>'
    )


@dataclass(frozen=True)
class RegionPage:
    """What one page of a region's strips shows.

    block: the first and last scan of this page; blocks: every page's block, oldest first.
    cells: each cell's <td> (`strip_cell`), keyed (track, scan), the scans of this block.
    missing: per scan without a sheet, why (a frame file that could not be read).
    """

    run: str
    region: int
    description: str
    block: tuple[int, int]
    blocks: Sequence[tuple[int, int]]
    cells: Mapping[tuple[int, int], str]
    crop: int
    metrics: RegionMetrics | None = None
    missing: Mapping[int, str] | None = None
    generated: str = ""


def region_page(page: RegionPage) -> str:
    tracks = sorted({t for t, _ in page.cells})
    scans = sorted({s for _, s in page.cells})
    nav = ['<a href="../index.html">report</a>', f'<a href="{list_file(1)}">all regions</a>']
    if len(page.blocks) > 1:
        links = []
        for i, block in enumerate(page.blocks):
            label = f"scans {block[0]}–{block[1]}"
            if block == page.block:
                links.append(f"<b>{label}</b>")
            else:
                newest = i == len(page.blocks) - 1
                target = region_file(page.region) if newest else block_file(page.region, block)
                links.append(f'<a href="{target}">{label}</a>')
        nav.append(" ".join(links))
    summary = ""
    if page.metrics is not None:
        m = page.metrics
        broadening = "–" if m.broadening is None else f"{m.broadening:+.0%} ({m.broadening_axis})"
        summary = (
            f'<p class="small">{m.tracks} tracks over scans {m.first_scan}–{m.last_scan}; '
            f"{m.overlaps} overlapping rows, {m.misses} missed, {m.id_changes} ID changes, "
            f"{m.late_births} late births; broadening {broadening}.</p>"
        )
    head = "".join(f"<th>scan {s}</th>" for s in scans)
    rows = [f"<tr><th></th>{head}</tr>"]
    for track in tracks:
        cells = "".join(page.cells.get((track, scan), "<td></td>") for scan in scans)
        rows.append(f'<tr><th class="tr">track {track}</th>{cells}</tr>')
    missing = ""
    if page.missing:
        items = "".join(f"<li>scan {s}: {_e(why)}</li>" for s, why in sorted(page.missing.items()))
        missing = f'<p class="small">Scans without images (grey):</p><ul class="small">{items}</ul>'
    description = f" <small>{_e(page.description)}</small>" if page.description else ""
    body = (
        f"<h1>Region {page.region}{description}</h1>"
        f'<p class="small">run “{_e(page.run)}” · {" · ".join(nav)} · generated '
        f'{_e(page.generated)} <span id="broken"></span></p>'
        f"{summary}{legend(page.crop)}"
        f'<table class="strip" id="strips">{"".join(rows)}</table>{missing}'
    )
    return _page(f"mpitrack {page.run}: region {page.region}", body)


@dataclass(frozen=True)
class Thumb:
    """A region's newest projection, for the gallery and the region list."""

    src: str  # relative to the page that shows it
    layout: SheetLayout


def _thumb(thumb: Thumb | None, width: int = 105) -> str:
    if thumb is None:
        return '<div class="thumb" style="height:40px"></div>'
    layout = thumb.layout
    sub_w = layout.n2 * layout.scale
    zoom = min(width / sub_w, 1.5)
    return (
        f'<div class="thumb" style="width:{round(sub_w * zoom)}px;'
        f'height:{round(layout.height * zoom)}px">'
        f'<img src="{_e(thumb.src)}" alt="" style="width:{round(layout.width * zoom)}px;'
        f'height:{round(layout.height * zoom)}px"></div>'
    )


def gallery(
    looks: Sequence[Look],
    descriptions: Mapping[int, str],
    thumbs: Mapping[int, Thumb],
    regions: int,
    prefix: str,
    pending: int = 0,
) -> str:
    """The index page's section: the regions to look at first, and the way to all the others.

    prefix: the spots directory relative to the index page (``spots/``).
    regions: how many regions have strips; pending: how many wait for theirs.
    """
    pages = max((regions + REGIONS_PER_LIST_PAGE - 1) // REGIONS_PER_LIST_PAGE, 1)
    lead = (
        f'<p class="small">Per region, a strip per track: each scan’s image around the track, '
        f"with detection’s outlines and the tracker’s decisions. "
        f'<a href="{_e(prefix)}{list_file(1)}">All {regions} regions</a>'
        f"{f' ({pages} pages)' if pages > 1 else ''}."
        f"{f' Strips are being drawn for {pending} more.' if pending else ''}</p>"
    )
    sections = []
    for look in looks:
        if look.regions:
            cards = "".join(
                f'<a class="card" href="{_e(prefix)}{region_file(r)}">'
                f"{_thumb(thumbs.get(r))}<span><b>region {r}</b> {_e(descriptions.get(r, ''))}"
                f"</span>{_e(value)}</a>"
                for r, value in look.regions
            )
            content = f'<div class="cards">{cards}</div>'
        else:
            content = '<p class="small">none</p>'
        sections.append(
            f'<div class="look" id="look-{_e(look.key)}"><h3>{_e(look.title)} '
            f"<small>· {_e(look.caption)}</small></h3>{content}</div>"
        )
    return f'<h2 id="spots">Spots: regions to look at first</h2>{lead}{"".join(sections)}'


def _pager(page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    links = [
        f"<b>{p}</b>" if p == page else f'<a href="{list_file(p)}">{p}</a>'
        for p in range(1, pages + 1)
    ]
    return f'<p class="pager small">pages: {" ".join(links)}</p>'


def list_page(
    run: str,
    page: int,
    pages: int,
    metrics: Sequence[RegionMetrics],
    descriptions: Mapping[int, str],
    hot_pixels: Mapping[int, float] | None = None,
) -> str:
    """One page of the region list (``REGIONS_PER_LIST_PAGE`` regions, by region id)."""
    hot = hot_pixels or {}
    head = (
        "<tr><th>region</th><th>description</th><th>tracks</th><th>scans</th><th>overlaps</th>"
        "<th>missed</th><th>ID changes</th><th>late births</th><th>broadening</th>"
        "<th>hot pixels</th></tr>"
    )
    rows = []
    for m in metrics:
        broadening = "–" if m.broadening is None else f"{m.broadening:+.0%} {m.broadening_axis}"
        rows.append(
            f'<tr><td><a href="{region_file(m.region)}">{m.region}</a></td>'
            f"<td>{_e(descriptions.get(m.region, ''))}</td><td>{m.tracks}</td>"
            f"<td>{m.first_scan}–{m.last_scan}</td><td>{m.overlaps}</td><td>{m.misses}</td>"
            f"<td>{m.id_changes}</td><td>{m.late_births}</td><td>{broadening}</td>"
            f"<td>{int(hot[m.region]) if m.region in hot else '–'}</td></tr>"
        )
    body = (
        f"<h1>Regions of run “{_e(run)}”</h1>"
        f'<p class="small"><a href="../index.html">report</a> <span id="broken"></span></p>'
        f"{_pager(page, pages)}"
        f'<table class="list">{head}{"".join(rows)}</table>{_pager(page, pages)}'
    )
    return _page(f"mpitrack {run}: regions, page {page}", body)
