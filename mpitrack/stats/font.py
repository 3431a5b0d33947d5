"""A 5x7 bitmap font for labels burnt into PNG strips (`mpitrack show`).

The strip images are written without matplotlib or a font library, so their
labels (scan numbers, track ids, flags) come from this table: the classic
5x7 character-LCD glyphs, digits, capitals and some punctuation. Lower case
is drawn as capitals; anything else as '?'.
"""

from __future__ import annotations

import numpy as np

GLYPH_WIDTH = 5
GLYPH_HEIGHT = 7
ADVANCE = GLYPH_WIDTH + 1  # one column of space between glyphs

# Seven rows per glyph, top first, five bits per row (0x10 = leftmost pixel), as hex.
_GLYPHS = {
    "0": "0E11131519110E",
    "1": "040C040404040E",
    "2": "0E11010204081F",
    "3": "1F02040201110E",
    "4": "02060A121F0202",
    "5": "1F101E0101110E",
    "6": "0608101E11110E",
    "7": "1F010204080808",
    "8": "0E11110E11110E",
    "9": "0E11110F01020C",
    "A": "0E1111111F1111",
    "B": "1E11111E11111E",
    "C": "0E11101010110E",
    "D": "1C12111111121C",
    "E": "1F10101E10101F",
    "F": "1F10101E101010",
    "G": "0E11101711110F",
    "H": "1111111F111111",
    "I": "0E04040404040E",
    "J": "0702020202120C",
    "K": "11121418141211",
    "L": "1010101010101F",
    "M": "111B1515111111",
    "N": "11111915131111",
    "O": "0E11111111110E",
    "P": "1E11111E101010",
    "Q": "0E11111115120D",
    "R": "1E11111E141211",
    "S": "0F10100E01011E",
    "T": "1F040404040404",
    "U": "1111111111110E",
    "V": "11111111110A04",
    "W": "1111111515150A",
    "X": "11110A040A1111",
    "Y": "1111110A040404",
    "Z": "1F01020408101F",
    " ": "00000000000000",
    "-": "0000001F000000",
    "_": "0000000000001F",
    ":": "000C0C000C0C00",
    ".": "00000000000C0C",
    ",": "000000000C0408",
    "#": "0A0A1F0A1F0A0A",
    "+": "0004041F040400",
    "/": "00010204081000",
    "=": "00001F001F0000",
    "(": "02040808080402",
    ")": "08040202020408",
    "?": "0E110102040004",
}


def _bitmap(hex_rows: str) -> np.ndarray:
    rows = [int(hex_rows[i : i + 2], 16) for i in range(0, 2 * GLYPH_HEIGHT, 2)]
    bits = 1 << np.arange(GLYPH_WIDTH - 1, -1, -1)
    return (np.array(rows)[:, None] & bits[None, :]) > 0


_BITMAPS = {char: _bitmap(rows) for char, rows in _GLYPHS.items()}


def text_width(text: str, scale: int = 1) -> int:
    """Pixel width of ``text`` drawn at ``scale`` (no trailing space)."""
    return max(len(text) * ADVANCE - 1, 0) * scale


def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """A boolean image of ``text``: (7 * scale, text_width(text, scale)), True = ink."""
    out = np.zeros((GLYPH_HEIGHT, max(len(text) * ADVANCE - 1, 0)), dtype=bool)
    for i, char in enumerate(text.upper()):
        glyph = _BITMAPS.get(char, _BITMAPS["?"])
        out[:, i * ADVANCE : i * ADVANCE + GLYPH_WIDTH] = glyph
    if scale > 1:
        out = out.repeat(scale, axis=0).repeat(scale, axis=1)
    return out


def draw_text(
    image: np.ndarray, text: str, top: int, left: int, colour: int, scale: int = 1
) -> None:
    """Paint ``text`` into a palette image in place; ink outside the image is clipped."""
    mask = text_mask(text, scale)
    h, w = mask.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, image.shape[0]), min(left + w, image.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    region = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    image[y0:y1, x0:x1][region] = colour
