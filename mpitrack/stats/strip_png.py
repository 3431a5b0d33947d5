"""The spot strip of one region as one palette image, for `mpitrack show`.

The same cells as the report's region pages (spot_html.py), drawn with numpy:
a row per track, a column per scan; per cell the projection crop over the
slice crop, the track's centre as a cross, the decision as the border's
colour and as words under it (font.py), since a PNG in a batch log has no
tooltip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mpitrack.stats.font import GLYPH_HEIGHT, draw_text, text_width
from mpitrack.stats.spotrows import Cell, cell_flags, cell_state
from mpitrack.stats.strips import (
    BACKGROUND,
    DETECTED,
    MARK,
    MISSED,
    NO_DATA,
    OPEN,
    OVERLAP,
    REVISED,
    TEXT,
    Sheet,
    crop_around,
    marker_offset,
    tile,
)

_BORDER_COLOUR = {"detected": DETECTED, "overlap": OVERLAP, "missed": MISSED}
_BORDER = 2
_GAP = 6
_LABEL = 2  # text scale of the headers


def _draw_marker(image: np.ndarray, row: int, col: int, arm: int, colour: int) -> None:
    h, w = image.shape
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        for r in range(2, 2 + arm):
            y, x = row + dr * r, col + dc * r
            if 0 <= y < h and 0 <= x < w:
                image[y, x] = colour


def _draw_border(image: np.ndarray, top: int, left: int, h: int, w: int, colour: int, dashed: bool):
    ys, xs = slice(top, top + h), slice(left, left + w)
    frame = np.zeros((h, w), dtype=bool)
    frame[:_BORDER, :] = frame[-_BORDER:, :] = True
    frame[:, :_BORDER] = frame[:, -_BORDER:] = True
    if dashed:
        yy, xx = np.indices((h, w))
        frame &= ((yy + xx) // 4) % 2 == 0
    image[ys, xs][frame] = colour


def compose_strip(
    title: str,
    tracks: Sequence[int],
    scans: Sequence[int],
    cells: Mapping[tuple[int, int], Cell],
    sheets: Mapping[int, Sheet | None],
    crop: int,
    scale: int,
) -> np.ndarray:
    """One palette image: a row of cells per track, a column per scan.

    Each cell is the projection crop over the slice crop around the track's
    centre (a cyan cross), bordered green (detected alone), red (overlapping)
    or dashed grey (missed), with the track id and its flags underneath. A
    scan without a sheet (frames gone) shows a grey box. cells are keyed
    (track, scan); a track without a row in a scan leaves its cell empty.
    """
    tile_px = crop * scale
    cell_w = tile_px + 2 * _BORDER
    text_h = GLYPH_HEIGHT + 3
    cell_h = 2 * tile_px + 3 * _BORDER + 2 * text_h
    head_w = text_width("TRACK 0000", _LABEL) + 2 * _GAP
    title_h = GLYPH_HEIGHT * _LABEL + 2 * _GAP
    scan_h = GLYPH_HEIGHT * _LABEL + _GAP
    width = head_w + len(scans) * (cell_w + _GAP) + _GAP
    height = title_h + scan_h + len(tracks) * (cell_h + _GAP) + _GAP
    width = max(width, text_width(title, _LABEL) + 2 * _GAP)
    image = np.full((height, width), BACKGROUND, np.uint8)
    draw_text(image, title, _GAP, _GAP, TEXT, _LABEL)
    for j, scan in enumerate(scans):
        left = head_w + j * (cell_w + _GAP)
        draw_text(image, f"S{scan}", title_h, left, TEXT, _LABEL)
    for i, track in enumerate(tracks):
        top = title_h + scan_h + i * (cell_h + _GAP)
        draw_text(image, f"TRACK {track}", top + tile_px - GLYPH_HEIGHT, _GAP, TEXT, _LABEL)
        for j, scan in enumerate(scans):
            cell = cells.get((track, scan))
            if cell is None:
                continue
            left = head_w + j * (cell_w + _GAP)
            _draw_cell(image, top, left, cell, sheets.get(scan), crop, scale)
    return image


def _draw_cell(
    image: np.ndarray, top: int, left: int, cell: Cell, sheet: Sheet | None, crop: int, scale: int
) -> None:
    tile_px = crop * scale
    block_h = 2 * tile_px + 3 * _BORDER
    state = cell_state(cell)
    inner_top, inner_left = top + _BORDER, left + _BORDER
    if sheet is None:
        image[inner_top : inner_top + 2 * tile_px + _BORDER, inner_left : inner_left + tile_px] = (
            NO_DATA
        )
    else:
        box = crop_around(cell.row.position, sheet.layout, crop)
        slice_image = sheet.layout.slice_image(cell.row.position[0])
        for k, image_index in enumerate((0, slice_image)):
            y = inner_top + k * (tile_px + _BORDER)
            pixels = tile(sheet, image_index, box)
            image[y : y + pixels.shape[0], inner_left : inner_left + pixels.shape[1]] = pixels
            mr, mc = marker_offset(cell.row.position, box, sheet.layout.scale)
            colour = MARK if cell.row.detected else MISSED
            area = image[y : y + tile_px, inner_left : inner_left + tile_px]
            _draw_marker(area, mr, mc, scale, colour)
    _draw_border(
        image, top, left, block_h, tile_px + 2 * _BORDER, _BORDER_COLOUR[state], state == "missed"
    )
    text_top = top + block_h + 2
    decision, history = cell_flags(cell)
    colour = OVERLAP if state == "overlap" else TEXT
    draw_text(image, f"#{cell.row.track} {decision}".strip(), text_top, left, colour)
    if history:
        colour = REVISED if cell.revised else OPEN
        draw_text(image, history, text_top + GLYPH_HEIGHT + 3, left, colour)
