"""Spot images: the PNG writer, the bitmap font, sheets, crops and the `show` strip."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest

from mpitrack.stats import font, png, strips
from mpitrack.stats.spotrows import Cell, SpotRow, cell_flags
from mpitrack.stats.strip_png import compose_strip
from mpitrack.stats.strips import (
    MARK,
    MISSED,
    NO_DATA,
    OUTLINE,
    OVERLAP,
    PALETTE,
    SheetLayout,
    crop_around,
    marker_offset,
    render_sheet,
    tile,
)


def _decode(data: bytes) -> np.ndarray:
    """Palette indices of a PNG, by Pillow: an independent decoder."""
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(io.BytesIO(data)) as image:
        assert image.mode == "P"
        return np.asarray(image)


def test_png_round_trips_through_an_independent_decoder() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, len(PALETTE), size=(7, 9), dtype=np.uint8).repeat(3, 0).repeat(3, 1)
    data = png.encode_indexed(pixels, PALETTE)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(_decode(data), pixels)


def test_png_refuses_indices_outside_the_palette() -> None:
    with pytest.raises(ValueError, match="outside a palette of 3"):
        png.encode_indexed(np.full((2, 2), 5, np.uint8), PALETTE[:3])
    with pytest.raises(ValueError, match="uint8"):
        png.encode_indexed(np.zeros((2, 2), np.int32), PALETTE)


def test_png_idat_holds_one_unfiltered_row_after_another() -> None:
    pixels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    data = png.encode_indexed(pixels, PALETTE)
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    raw = zlib.decompress(data[start : start + length])
    assert raw == b"".join(b"\x00" + bytes(row) for row in pixels.tolist())


def test_font_draws_known_glyphs_and_clips() -> None:
    one = font.text_mask("1")
    assert one.shape == (7, 5)
    assert one[:, 2].all()  # the stem of the 1
    assert font.text_mask("10").shape == (7, 11) and font.text_width("10", 2) == 22
    assert font.text_mask("a").tolist() == font.text_mask("A").tolist()
    assert font.text_mask("~").tolist() == font.text_mask("?").tolist()
    assert font.text_mask("_")[-1].all() and not font.text_mask("_")[:-1].any()
    image = np.zeros((5, 5), np.uint8)
    font.draw_text(image, "8", -2, 3, 9)  # partly outside: clipped, no error
    assert image.max() == 9 and image[:, :3].max() == 0


def _volume(centre=(4.0, 10.0, 14.0), shape=(9, 24, 30)) -> tuple[np.ndarray, np.ndarray]:
    grid = np.indices(shape).astype(float)
    r2 = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, (1.0, 1.5, 1.5), strict=True))
    volume = 100.0 + 1000.0 * np.exp(-r2 / 2)
    labels = (r2 < 4.0).astype(np.int32)
    return volume, labels


def test_sheet_shows_the_spot_where_it_is_with_its_outline() -> None:
    volume, labels = _volume()
    sheet = render_sheet(volume, labels, background=100.0, noise=1.0, scale=3)
    layout = sheet.layout
    assert layout == SheetLayout(9, 24, 30, 3)
    assert sheet.pixels.shape == (24 * 3, 10 * 30 * 3)
    projection = sheet.pixels[:, : 30 * 3]
    grey = np.where(projection < strips.N_GREY, projection, 0)
    row, col = np.unravel_index(np.argmax(grey), grey.shape)
    assert (row // 3, col // 3) == (10, 14)  # the brightest voxel is the spot's centre
    # The outline is exactly the edge of the enlarged label mask, in every sub-image.
    mask = labels.max(axis=0).repeat(3, 0).repeat(3, 1)
    inner = mask.copy()
    inner[1:-1, 1:-1] &= (
        mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    ).astype(bool)
    np.testing.assert_array_equal(projection == OUTLINE, mask.astype(bool) & ~inner.astype(bool))
    # A slice far from the spot in omega has neither outline nor signal.
    far = sheet.pixels[:, layout.left(1) : layout.left(2)]
    assert far.max() == 0


def test_sheet_of_a_flat_volume_is_black_and_shapes_are_checked() -> None:
    flat = np.full((3, 12, 12), 7.0)
    sheet = render_sheet(flat, np.zeros(flat.shape, np.int32), 7.0, 0.0)
    assert sheet.pixels.max() == 0
    with pytest.raises(ValueError, match="same 3D shape"):
        render_sheet(flat, np.zeros((3, 12, 11), np.int32), 7.0, 0.0)


def test_sheet_draws_unmeasured_voxels_as_no_data_and_the_rest_as_before() -> None:
    volume, labels = _volume()
    clean = render_sheet(volume, labels, background=100.0, noise=1.0, scale=1)
    gap = volume.copy()
    gap[:, :, 20] = np.nan  # a masked detector column, away from the spot
    gap[2, 3, 4] = np.nan  # one masked voxel in one slice only
    sheet = render_sheet(gap, labels, background=100.0, noise=1.0, scale=1)
    layout = sheet.layout
    projection = sheet.pixels[:, : layout.left(1)]
    assert (projection[:, 20] == NO_DATA).all()  # masked in every slice
    assert projection[3, 4] != NO_DATA  # measured in the other slices
    assert sheet.pixels[3, layout.left(3) + 4] == NO_DATA  # slice 2
    measured = sheet.pixels != NO_DATA
    np.testing.assert_array_equal(sheet.pixels[measured], clean.pixels[measured])


def test_crop_centres_on_the_track_and_stays_inside() -> None:
    layout = SheetLayout(5, 35, 40, 3)
    assert crop_around((2.0, 17.0, 20.0), layout, 21) == strips.Crop(7, 10, 21, 21)
    assert crop_around((2.0, 1.0, 39.4), layout, 21) == strips.Crop(0, 19, 21, 21)
    small = SheetLayout(5, 12, 12, 3)
    assert crop_around((0.0, 6.0, 6.0), small, 21) == strips.Crop(0, 0, 12, 12)
    crop = crop_around((2.0, 1.0, 39.4), layout, 21)
    # (1 + 0.5) * 3 = 4.5 rounds to 4; (39.4 - 19 + 0.5) * 3 = 62.7 to 63
    assert marker_offset((2.0, 1.0, 39.4), crop, 3) == (4, 63)
    assert layout.slice_image(-3.0) == 1 and layout.slice_image(2.6) == 4
    assert layout.slice_image(99.0) == 5


def test_tile_is_the_crop_of_the_right_sub_image() -> None:
    volume, labels = _volume()
    sheet = render_sheet(volume, labels, 100.0, 1.0, scale=2)
    crop = crop_around((4.0, 10.0, 14.0), sheet.layout, 7)
    slice_tile = tile(sheet, sheet.layout.slice_image(4.0), crop)
    assert slice_tile.shape == (14, 14)
    left = sheet.layout.left(5)  # omega 4 -> sub-image 5; columns 11..17 -> pixels 22..35
    np.testing.assert_array_equal(slice_tile, sheet.pixels[14:28, left + 22 : left + 36])


def test_strip_marks_each_decision() -> None:
    volume, labels = _volume()
    sheet = render_sheet(volume, labels, 100.0, 1.0, scale=3)
    pos = (4.0, 10.0, 14.0)
    cells = {
        (1, 0): Cell(SpotRow(1, 0, True, False, pos)),
        (1, 1): Cell(SpotRow(1, 1, True, True, pos, overlap_with=(2,))),
        (2, 1): Cell(SpotRow(2, 1, True, True, pos, overlap_with=(1,)), open=True),
        (2, 2): Cell(SpotRow(2, 2, False, False, pos), open=True, revised=True),
    }
    image = compose_strip("REGION 0", [1, 2], [0, 1, 2], cells, {0: sheet, 1: sheet, 2: None}, 9, 3)
    colours = set(np.unique(image).tolist())
    assert {OUTLINE, MARK, OVERLAP, MISSED, NO_DATA, strips.OPEN, strips.REVISED} <= colours
    without_overlap = {k: v for k, v in cells.items() if not v.row.overlapping}
    image = compose_strip("R", [1, 2], [0, 1, 2], without_overlap, {0: sheet, 2: sheet}, 9, 3)
    assert OVERLAP not in set(np.unique(image).tolist())
    assert cell_flags(cells[(1, 1)]) == ("OVL+2", "")
    assert cell_flags(cells[(2, 2)]) == ("MISS", "REV OPEN")
    shared = Cell(SpotRow(1, 0, True, False, pos, overlap_with=(3, 4)))
    assert cell_flags(shared) == ("SHR+3+4", "")
