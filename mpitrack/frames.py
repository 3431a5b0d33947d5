"""Frame files: names, safe loading, volume assembly and incremental directory scans.

A frame is one 2D ``.npy`` array: the slice of one region at one omega frame of one
scan. Frames come from producers we do not control, so everything here treats a
file as untrusted input: names that do not match the pattern are ignored (and
reported once), and every load is validated (readable, complete, 2D, numeric,
expected shape, no infinite values) without ever unpickling. A bad file raises
`FrameError` naming the file and the reason, which fails that one job rather
than a rank.

Masked pixels (``frames.mask``: detector gaps, dead pixels) come back as NaN:
a pixel equal to one of the mask's marker values (compared in the file's own
dtype, so 2^32-1 matches in uint32 and float32 files alike), a pixel of the
mask file, or a NaN in the file. Detection treats NaN as "no measurement".
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import stat
import string
import time
import tokenize
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import numpy as np
import numpy.lib.format as npformat

if TYPE_CHECKING:
    from mpitrack.config import MaskConfig

log = logging.getLogger(__name__)

FIELDS = ("region", "frame", "scan")

#: Maximum .npy header size accepted, as numpy's own default (guards against
#: headers crafted to make the parser allocate or work hard).
_MAX_HEADER_SIZE = 10_000


class FrameKey(NamedTuple):
    """Identity of one frame file: which region, which omega frame, which scan."""

    region: int
    frame: int
    scan: int


class FrameError(Exception):
    """A frame file that cannot be used; str() names the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def _ignored_name(relpath: str) -> bool:
    """Names producers use while a file is being written: dot-files and ``*.tmp``."""
    parts = relpath.split("/")
    return any(p.startswith(".") for p in parts) or parts[-1].endswith(".tmp")


# A literal piece of a regex: an escaped non-alphanumeric character or a plain one.
_RE_LITERAL = re.compile(r"\\([^A-Za-z0-9])|([^\\.^$*+?{}\[\]|()])")
_RE_GROUP = re.compile(r"\(\?P<(region|frame|scan)>(\\d\+|\\d\{(\d+)\}|\[0-9\]\+)\)")


def _regex_to_format(regex: str) -> str | None:
    """Format string equivalent of a regex made only of literals and digit groups.

    Lets ``load_volume`` build file names for the common "re:" patterns such as
    ``r(?P<region>\\d+)_f(?P<frame>\\d{5})_s(?P<scan>\\d+)\\.npy``; returns None for
    anything more general (alternation, wildcards), which cannot be formatted.
    """
    out: list[str] = []
    pos = 0
    while pos < len(regex):
        m = _RE_GROUP.match(regex, pos)
        if m:
            name, width = m.group(1), m.group(3)
            out.append(f"{{{name}:0{width}d}}" if width else f"{{{name}}}")
            pos = m.end()
            continue
        m = _RE_LITERAL.match(regex, pos)
        if not m:
            return None
        literal = m.group(1) or m.group(2)
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        pos = m.end()
    return "".join(out)


@dataclass(frozen=True)
class FramePattern:
    """Where frames live relative to the frame directory, and how their names read.

    Either a format string with fields ``{region}``, ``{frame}`` and ``{scan}``
    (each at least once; format specs such as ``{frame:05d}`` allowed; ``/``
    separates per-scan subdirectories), or ``"re:<regex>"`` with named groups
    ``region``, ``frame`` and ``scan`` matched against the whole relative path.
    Parsing is lenient about zero padding (``region_01`` and ``region_1`` are both
    region 1); a field that appears twice must carry the same number both times.
    """

    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _format: str | None = field(init=False, repr=False, compare=False)
    _groups: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern.startswith("re:"):
            regex, fmt, groups = self._compile_regex(self.pattern[3:])
        else:
            regex, fmt, groups = self._compile_format(self.pattern)
        object.__setattr__(self, "_regex", regex)
        object.__setattr__(self, "_format", fmt)
        object.__setattr__(self, "_groups", groups)

    @staticmethod
    def _compile_regex(
        source: str,
    ) -> tuple[re.Pattern[str], str | None, dict[str, tuple[str, ...]]]:
        try:
            regex = re.compile(source)
        except re.error as exc:
            raise ValueError(f"frame pattern regex {source!r} does not compile: {exc}") from exc
        missing = [f for f in FIELDS if f not in regex.groupindex]
        if missing:
            raise ValueError(
                f"frame pattern regex {source!r} lacks named group(s) "
                + ", ".join(f"(?P<{f}>...)" for f in missing)
            )
        return regex, _regex_to_format(source), {f: (f,) for f in FIELDS}

    @staticmethod
    def _compile_format(
        pattern: str,
    ) -> tuple[re.Pattern[str], str | None, dict[str, tuple[str, ...]]]:
        parts: list[str] = []
        groups: dict[str, list[str]] = {f: [] for f in FIELDS}
        try:
            parsed = list(string.Formatter().parse(pattern))
        except ValueError as exc:
            msg = f"frame pattern {pattern!r} is not a valid format string: {exc}"
            raise ValueError(msg) from None
        for literal, name, spec, conversion in parsed:
            parts.append(re.escape(literal))
            if name is None:
                continue
            if name not in groups:
                raise ValueError(
                    f"frame pattern {pattern!r} has unknown field {{{name}}}; "
                    "allowed: {region}, {frame}, {scan}"
                )
            if conversion:
                raise ValueError(
                    f"frame pattern {pattern!r}: field {{{name}}} has a conversion "
                    f"!{conversion}, which is not supported"
                )
            if spec and not re.fullmatch(r"0?\d*d?", spec):
                raise ValueError(
                    f"frame pattern {pattern!r}: field {{{name}}} has an unsupported "
                    f"format spec {spec!r} (use e.g. {{{name}:05d}})"
                )
            group = f"{name}{len(groups[name])}"
            groups[name].append(group)
            parts.append(rf"(?P<{group}>\d+)")
        missing = [f for f in FIELDS if not groups[f]]
        if missing:
            raise ValueError(
                f"frame pattern {pattern!r} lacks field(s) "
                + ", ".join("{" + f + "}" for f in missing)
            )
        return re.compile("".join(parts)), pattern, {f: tuple(g) for f, g in groups.items()}

    @property
    def depth(self) -> int:
        """Number of path components (1 for a flat directory); an upper bound for regexes."""
        return self.pattern.count("/") + 1

    def format(self, region: int, frame: int, scan: int) -> str:
        """Relative path of a frame. Regex patterns work only when made of literals."""
        if self._format is None:
            raise ValueError(
                f"frame pattern {self.pattern!r} is a general regex and cannot build file "
                "names; use a format-string pattern (or a regex of literals and "
                r"(?P<field>\d+) groups)"
            )
        name = self._format.format(region=region, frame=frame, scan=scan)
        if self.parse(name) != (region, frame, scan):
            raise ValueError(
                f"frame pattern {self.pattern!r} formats ({region}, {frame}, {scan}) as "
                f"{name!r}, which does not parse back"
            )
        return name

    def parse(self, relpath: str) -> FrameKey | None:
        """The frame a relative path names, or None (dot-files and ``*.tmp`` never match)."""
        if _ignored_name(relpath):
            return None
        m = self._regex.fullmatch(relpath)
        if m is None:
            return None
        values = []
        for f in FIELDS:
            try:
                found = {int(m.group(g)) for g in self._groups[f]}
            except (TypeError, ValueError):
                return None
            if len(found) != 1:
                return None
            values.append(found.pop())
        return FrameKey(*values)

    def component_regex(self, index: int) -> re.Pattern[str] | None:
        """Regex a directory name at ``index`` must match, for format patterns only."""
        if self.pattern.startswith("re:"):
            return None
        component = self.pattern.split("/")[index]
        pieces = []
        for literal, name, _spec, _conv in string.Formatter().parse(component):
            pieces.append(re.escape(literal))
            if name is not None:
                pieces.append(r"\d+")
        return re.compile("".join(pieces))


# ----------------------------------------------------------------------------- loading

_EXACT_FLOAT32 = {"int8", "uint8", "int16", "uint16", "float16", "float32"}


def _validate_header(
    path: str, fp, file_size: int, expected_shape
) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Check an .npy header before reading data, so that corrupt or hostile files
    never make numpy unpickle, allocate a huge array or read past the end.
    Returns (shape, fortran_order, dtype); ``fp`` is left at the data."""
    # Errors never quote numpy's messages: they echo bytes of the file, and a frame
    # (or whatever a link points at) must not end up in logs and job_failures.
    try:
        version = npformat.read_magic(fp)
    except (ValueError, OSError, EOFError):
        raise FrameError(path, "not a .npy file (no .npy magic string)") from None
    try:
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(
                fp, max_header_size=_MAX_HEADER_SIZE
            )
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(
                fp, max_header_size=_MAX_HEADER_SIZE
            )
        else:
            raise FrameError(path, f"unsupported .npy format version {version[0]}.{version[1]}")
    except (ValueError, TypeError, OSError, EOFError, SyntaxError, tokenize.TokenError):
        # numpy's header parser lets TokenError and TypeError escape on some garbage.
        raise FrameError(path, "corrupt .npy header") from None
    if dtype.hasobject:
        raise FrameError(path, f"object dtype {dtype} refused (would need unpickling)")
    if dtype.kind not in "iuf":
        raise FrameError(path, f"non-numeric dtype {dtype} (need integer or float)")
    if len(shape) != 2:
        raise FrameError(path, f"expected a 2D array, got {len(shape)}D with shape {shape}")
    _check_this_file(path, tuple(shape), dtype, expected_shape, file_size - fp.tell())
    return tuple(shape), bool(fortran), dtype


def _check_this_file(
    path: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    expected_shape: Sequence[int] | None,
    data_bytes: int,
) -> None:
    """The checks a valid header still owes each file: the expected shape, and as
    many data bytes as the header promises."""
    if expected_shape is not None and shape != tuple(expected_shape):
        raise FrameError(path, f"shape {shape} differs from expected {tuple(expected_shape)}")
    need = math.prod(shape) * dtype.itemsize
    if data_bytes < need:
        raise FrameError(
            path, f"truncated: header promises {need} data bytes, file holds {max(data_bytes, 0)}"
        )


def marker_pixels(raw: np.ndarray, values: Sequence[float]) -> np.ndarray | None:
    """Pixels of ``raw`` equal to a marker value in raw's own dtype, or None if there are none.

    A marker that the dtype cannot hold (-1 in unsigned data, 2^32-1 in 16-bit
    data) matches nothing; in float data the marker is rounded to the dtype first,
    as the detector's software rounded it when it wrote the file.
    """
    found = None
    for value in values:
        if raw.dtype.kind in "iu":
            info = np.iinfo(raw.dtype)
            if value != int(value) or not info.min <= value <= info.max:
                continue
            hit = raw == raw.dtype.type(int(value))
        elif raw.dtype.kind == "f":
            with np.errstate(over="ignore"):
                marker = raw.dtype.type(value)
            if not np.isfinite(marker):
                continue
            hit = raw == marker
        else:
            continue
        if hit.any():
            found = hit if found is None else found | hit
    return found


@dataclass(frozen=True)
class FrameMask:
    """Which pixels of a region's frames hold no measurement (frames.mask for one region).

    values: marker values (see `marker_pixels`). pixels: bool array of the frame
    shape (True = masked), or None.
    """

    values: tuple[float, ...] = ()
    pixels: np.ndarray | None = field(default=None, repr=False)

    def apply(self, raw: np.ndarray, path: str | os.PathLike[str]) -> np.ndarray:
        """The float frame with masked pixels set to NaN (a new array)."""
        arr = np.empty(raw.shape, dtype=_float_type(raw.dtype))
        self.apply_into(raw, arr, path)
        return arr

    def apply_into(self, raw: np.ndarray, out: np.ndarray, path: str | os.PathLike[str]) -> None:
        """Write the frame into ``out`` (a float array of its shape, e.g. a volume's
        slice) with masked pixels set to NaN."""
        if self.pixels is not None and self.pixels.shape != raw.shape:
            raise FrameError(
                path, f"shape {raw.shape} differs from the mask file's {self.pixels.shape}"
            )
        out[...] = raw
        markers = marker_pixels(raw, self.values)
        if markers is not None:
            out[markers] = np.nan
        if self.pixels is not None:
            out[self.pixels] = np.nan


class FrameMasks:
    """The FrameMask of each region from frames.mask (values, file); mask files read once.

    A mask file is an ordinary 2D .npy array (nonzero = masked), loaded as safely
    as a frame; "{region}" in its name gives one file per region. A bad mask
    file is a FrameError naming it.
    """

    def __init__(self, values: Sequence[float] = (), file: str | os.PathLike[str] | None = None):
        self.values = tuple(float(v) for v in values)
        self.file = None if file is None else os.fspath(file)
        self._by_region: dict[int, FrameMask] = {}

    @classmethod
    def from_config(cls, mask: MaskConfig) -> FrameMasks:
        """The masks of a config's ``frames.mask`` section (`mpitrack.config.MaskConfig`)."""
        return cls(mask.values, mask.file)

    def for_region(self, region: int) -> FrameMask:
        mask = self._by_region.get(region)
        if mask is None:
            pixels = None
            if self.file is not None:
                path = self.file.format(region=region)
                pixels = load_frame(path) != 0
                pixels.setflags(write=False)
            mask = self._by_region[region] = FrameMask(self.values, pixels)
        return mask


def _float_type(dtype: np.dtype) -> type[np.floating]:
    """float32 where it holds the data exactly (<= 16-bit), else float64."""
    return np.float32 if dtype.name in _EXACT_FLOAT32 else np.float64


def _read_raw(
    path: str, expected_shape: Sequence[int] | None, missing: str = "file not found"
) -> np.ndarray:
    """One frame file's validated array in its own dtype: a read-only view of the
    bytes read, no copy. Four system calls (open, fstat, one read, close): the
    file is read whole, its header checked from memory (`_validate_header`)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise FrameError(path, missing) from None
    except IsADirectoryError:
        raise FrameError(path, "is a directory, not a frame file") from None
    except OSError as exc:
        raise FrameError(path, f"unreadable ({exc.strerror or type(exc).__name__})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise FrameError(path, "is a directory, not a frame file")
        data = os.read(fd, st.st_size)
        while len(data) < st.st_size:  # a short read: rare, but allowed
            more = os.read(fd, st.st_size - len(data))
            if not more:
                break
            data += more
    except OSError as exc:
        raise FrameError(path, f"unreadable ({exc.strerror or type(exc).__name__})") from None
    finally:
        os.close(fd)
    shape, fortran, dtype, offset = _header_of(path, data, expected_shape)
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
    return arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)


#: Validated .npy headers by their bytes: a run's frames share a handful of
#: headers, and parsing one (numpy evaluates it as a Python literal) costs more
#: than reading a small frame.
_HEADERS: dict[bytes, tuple[tuple[int, ...], bool, np.dtype, int]] = {}
_MAX_HEADERS = 256


def _header_of(
    path: str, data: bytes, expected_shape: Sequence[int] | None
) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) of a frame file's bytes, validated as
    `_validate_header` does (a header seen before is not parsed again; the shape
    and the data's length are still checked against this file)."""
    end = _header_end(data)
    known = _HEADERS.get(data[:end]) if end else None
    if known is None:
        fp = io.BytesIO(data)
        shape, fortran, dtype = _validate_header(path, fp, len(data), expected_shape)
        known = (shape, fortran, dtype, fp.tell())
        if end == known[3] and len(_HEADERS) < _MAX_HEADERS:
            _HEADERS[data[:end]] = known
        return known
    shape, _fortran, dtype, offset = known
    _check_this_file(path, shape, dtype, expected_shape, len(data) - offset)
    return known


def _header_end(data: bytes) -> int:
    """Where an .npy file's header ends (0 when the bytes do not say)."""
    if data[:6] != b"\x93NUMPY" or len(data) < 12:
        return 0
    if data[6] == 1:
        return 10 + int.from_bytes(data[8:10], "little")
    if data[6] == 2:
        return 12 + int.from_bytes(data[8:12], "little")
    return 0


def load_frame(
    path: str | os.PathLike[str],
    expected_shape: Sequence[int] | None = None,
    mask: FrameMask | None = None,
) -> np.ndarray:
    """Read and validate one frame; returns float32 (exact for <=16-bit data) or float64.

    Masked pixels (``mask``, and NaN in the file) are NaN. Raises FrameError for a
    missing, unreadable, truncated or corrupt file, an object, non-numeric or
    non-2D array, a shape other than ``expected_shape``, or an infinite value.
    Pickled data is never loaded.
    """
    spath = os.fspath(path)
    raw = _read_raw(spath, expected_shape)
    if mask is not None:
        arr = mask.apply(raw, spath)
    else:
        arr = np.array(raw, dtype=_float_type(raw.dtype), order="C")
    refuse_infinite(arr, spath)
    return arr


def refuse_infinite(arr: np.ndarray, path: str) -> None:
    """A frame with an infinite value is a FrameError (NaN is "no measurement", inf is
    a broken frame)."""
    bad = int(np.count_nonzero(np.isinf(arr)))
    if bad:
        raise FrameError(path, f"{bad} infinite value(s) of {arr.size}")


def load_volume(
    directory: str | os.PathLike[str],
    pattern: FramePattern,
    region: int,
    scan: int,
    window: Sequence[int],
    expected_shape: Sequence[int] | None = None,
    mask: FrameMask | None = None,
) -> np.ndarray:
    """Stack a region's frames of one scan in window order: shape (len(window), n1, n2).

    Without ``expected_shape`` the first frame's shape is the reference, so frames of
    one volume always agree. Frames of mixed dtypes are promoted to float64. Masked
    pixels are NaN; a volume without a single measured pixel is a FrameError (its
    first frame named), since nothing can be detected in it.

    Each frame is read whole in one system call and converted once, straight
    into its slice of the volume (no per-frame array, no stacking copy);
    benchmarks/volume_load.py measures this against a plain ``np.load`` loop.
    """
    if len(window) == 0:
        raise ValueError(f"empty omega window for region {region}, scan {scan}")
    base = os.fspath(directory)
    shape = tuple(expected_shape) if expected_shape is not None else None
    paths = [
        os.path.join(base, pattern.format(region=region, frame=frame, scan=scan))
        for frame in window
    ]
    volume: np.ndarray | None = None
    for i, (frame, path) in enumerate(zip(window, paths, strict=True)):
        raw = _read_raw(path, shape, f"missing frame {frame} of region {region}, scan {scan}")
        if volume is None:
            shape = raw.shape
            volume = np.empty((len(window), *shape), dtype=_float_type(raw.dtype))
        elif volume.dtype != np.float64 and _float_type(raw.dtype) is np.float64:
            volume = volume.astype(np.float64)
        if mask is None:
            volume[i] = raw
        else:
            mask.apply_into(raw, volume[i], path)
    assert volume is not None
    if np.isinf(volume).any():
        for i, path in enumerate(paths):
            refuse_infinite(volume[i], path)
    refuse_all_masked(volume, paths[0], region, scan)
    return volume


def refuse_all_masked(volume: np.ndarray, where: str, region: int, scan: int) -> None:
    """A volume without a single measured pixel is a FrameError: nothing can be
    detected in it."""
    if np.isnan(volume).all():
        raise FrameError(
            where, f"every pixel of region {region}, scan {scan} is masked (NaN or frames.mask)"
        )


# ------------------------------------------------------------- files still being written

#: Seconds a frame file must be unchanged before a short or empty file is taken as
#: final (``frames.settle_s``): see `read_settled` and `DirectoryScanner`.
DEFAULT_SETTLE_S = 5.0

#: A file that keeps changing is waited for at most this many settle times.
_MAX_SETTLE_WAITS = 10

_T = TypeVar("_T")


def _stamp(path: str) -> tuple[int, int] | None:
    """(size, mtime) of a file, None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def read_settled(load: Callable[[], _T], settle_s: float = DEFAULT_SETTLE_S) -> _T:
    """``load()``, read again while the file it failed on is still being written.

    A producer that writes a frame in place (half, a pause, the rest) lets a
    reader see a truncated or empty file. So when ``load`` raises `FrameError`
    for a file that changed less than ``settle_s`` ago, this waits: a change
    of the file (size or mtime) means another read; a file left unchanged for
    ``settle_s`` is final, and its error stands. A file that keeps changing is
    waited for at most ten settle times.
    """
    deadline = time.monotonic() + _MAX_SETTLE_WAITS * settle_s
    while True:
        try:
            return load()
        except FrameError as exc:
            stamp = _stamp(exc.path)
            if stamp is None:
                raise
            while True:
                quiet = time.time() - stamp[1] / 1e9
                if quiet >= settle_s or time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.1, settle_s - quiet))
                if _stamp(exc.path) != stamp:
                    log.info("%s changed while it was read: reading it again", exc.path)
                    break


def refuse_outside_links(
    directory: str | os.PathLike[str],
    pattern: FramePattern,
    region: int,
    scan: int,
    window: Sequence[int],
) -> None:
    """FrameError for a frame of the window whose path leads outside ``directory``
    (a symbolic link to another place): frames are read from the frame directory
    only, unless a site allows such links (``frames.outside_links``)."""
    base = os.path.realpath(directory)
    # A window's frames share their directory: resolve it once, then lstat each
    # file (one system call) instead of resolving every path component per frame.
    parents: dict[str, str] = {}
    for frame in window:
        path = os.path.join(directory, pattern.format(region=region, frame=frame, scan=scan))
        parent, name = os.path.split(path)
        if parent not in parents:
            parents[parent] = os.path.realpath(parent)
        real = os.path.join(parents[parent], name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if os.path.commonpath([base, real]) != base:
            raise FrameError(
                path,
                "is a symbolic link out of the frame directory: refused "
                "(frames.outside_links: true allows such links)",
            )


# ----------------------------------------------------------------------------- scanning


@dataclass
class _Dir:
    """What the scanner remembers about one directory between polls."""

    mtime_ns: int = -1
    racy: bool = True
    names: frozenset[str] = frozenset()
    children: set[str] = field(default_factory=set)


class DirectoryScanner:
    """Incremental scan of the frame directory: ``poll()`` returns frames new since
    the last poll.

    Cost model (rank 0 polls every ``poll_interval``; runs reach 10^5 files):

    - A directory is listed only when its mtime changed since it was last listed
      (creating, renaming or deleting an entry updates it). Listing is one
      ``os.listdir`` (C speed); names already seen are dropped with one set
      difference, and only new names are parsed and ``stat``-ed. So an idle poll
      costs one ``stat`` per directory, and a busy poll costs O(entries of the
      changed directories) in C plus O(new files) in Python.
    - With a flat directory every busy poll lists every file ever written: cost
      grows with the directory. With per-scan subdirectories (a ``/`` in the
      pattern, e.g. ``scan_{scan}/...``) only the directory of the scan being
      written changes, so the cost stays at one scan's worth of files. That is the
      recommended layout for long runs (see benchmarks/dir_poll.py for figures).
    - mtime granularity: a file created in the same clock tick as our listing would
      not change the mtime we recorded. A directory whose mtime is within
      ``racy_s`` of the poll's start is therefore listed again on the next poll.

    Completeness: producers should write a temporary name (dot-file or ``*.tmp``,
    always ignored) and rename. A matching file of size zero is held back and
    re-checked (one ``stat``) on each poll until it has data, or until it has stayed
    empty for ``settle_s`` seconds: then it is reported, so that its job fails
    naming it instead of the run waiting for ever. (A file written in place is
    reported as soon as it has data; the worker reads it again while it changes,
    see `read_settled`.) A directory with a frame's name is reported too, with a
    warning, for the same reason. Names that match nothing are logged once at
    WARNING and then ignored.
    Subdirectories are descended down to the pattern's depth (the number of ``/``
    plus one); dot-directories never.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        pattern: FramePattern | str,
        *,
        racy_s: float = 2.0,
        settle_s: float = DEFAULT_SETTLE_S,
    ) -> None:
        self.directory = Path(directory)
        self.pattern = pattern if isinstance(pattern, FramePattern) else FramePattern(pattern)
        self.racy_s = racy_s
        self.settle_s = settle_s
        self._depth = self.pattern.depth
        self._dirs: dict[str, _Dir] = {}
        self._pending: dict[str, FrameKey] = {}
        self._dir_regex = [self.pattern.component_regex(i) for i in range(self._depth - 1)]
        self._warned_missing = False

    def poll(self) -> list[FrameKey]:
        """Frames that appeared (complete) since the previous poll, in no set order."""
        now_ns = time.time_ns()
        found: list[FrameKey] = []
        self._check_pending(found, now_ns)
        if not self.directory.is_dir():
            if not self._warned_missing:
                log.warning("frame directory %s does not exist (yet)", self.directory)
                self._warned_missing = True
            return found
        self._dirs.setdefault("", _Dir())
        self._walk("", 0, found, now_ns)
        return found

    def _check_pending(self, found: list[FrameKey], now_ns: int) -> None:
        for rel, key in list(self._pending.items()):
            try:
                st = os.stat(self.directory / rel)
            except FileNotFoundError:
                # Forget the name too, so a re-created file is seen as new.
                del self._pending[rel]
                parent, _, name = rel.rpartition("/")
                if parent in self._dirs:
                    self._dirs[parent].names -= {name}
                continue
            if self._complete(st, now_ns):
                del self._pending[rel]
                found.append(key)

    def _complete(self, st: os.stat_result, now_ns: int) -> bool:
        return st.st_size > 0 or (now_ns - st.st_mtime_ns) >= self.settle_s * 1e9

    def _walk(self, rel: str, level: int, found: list[FrameKey], now_ns: int) -> None:
        state = self._dirs[rel]
        full = self.directory / rel
        try:
            mtime_ns = os.stat(full).st_mtime_ns
            if state.racy or mtime_ns != state.mtime_ns:
                names = frozenset(os.listdir(full))
            else:
                names = None
        except (FileNotFoundError, NotADirectoryError):
            self._forget(rel)
            return
        if names is not None:
            new = names - state.names
            state.names, state.mtime_ns = names, mtime_ns
            state.racy = (now_ns - mtime_ns) < self.racy_s * 1e9
            prefix = f"{rel}/" if rel else ""
            for name in new:
                self._consider(prefix + name, name, level, state, found, now_ns)
            for child in [c for c in state.children if c.rpartition("/")[2] not in names]:
                self._forget(child)
        for child in list(state.children):
            self._walk(child, level + 1, found, now_ns)

    def _forget(self, rel: str) -> None:
        state = self._dirs.pop(rel, None)
        if state is not None:
            for child in state.children:
                self._forget(child)
        parent = self._dirs.get(rel.rpartition("/")[0])
        if parent is not None and rel:
            parent.children.discard(rel)

    def _consider(
        self, rel: str, name: str, level: int, parent: _Dir, found: list[FrameKey], now_ns: int
    ) -> None:
        if name.startswith(".") or name.endswith(".tmp"):
            return
        try:
            st = os.stat(self.directory / rel)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            regex = self._dir_regex[level] if level < self._depth - 1 else None
            if level < self._depth - 1 and (regex is None or regex.fullmatch(name)):
                self._dirs[rel] = _Dir()
                parent.children.add(rel)
                return
            key = self.pattern.parse(rel)
            if key is not None:
                log.warning(
                    "%s in frame directory %s has a frame's name but is a directory: "
                    "region %d scan %d will fail on it",
                    rel,
                    self.directory,
                    key.region,
                    key.scan,
                )
                found.append(key)
                return
        elif stat.S_ISREG(st.st_mode):
            key = self.pattern.parse(rel)
            if key is not None:
                if self._complete(st, now_ns):
                    found.append(key)
                else:
                    self._pending[rel] = key
                return
        log.warning(
            "ignoring %s in frame directory %s: does not match pattern %r",
            rel,
            self.directory,
            self.pattern.pattern,
        )
