"""Frame files: names, safe loading, volume assembly and incremental directory scans.

A frame is one 2D ``.npy`` array: the slice of one region at one omega frame of one
scan. Frames come from producers we do not control, so everything here treats a
file as untrusted input: names that do not match the pattern are ignored (and
reported once), and every load is validated (readable, complete, 2D, numeric,
expected shape, finite) without ever unpickling. A bad file raises `FrameError`
naming the file and the reason, which fails that one job rather than a rank.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import string
import time
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.lib.format as npformat

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


def _validate_header(path: str, fp, file_size: int, expected_shape) -> None:
    """Check an .npy header before reading data, so that corrupt or hostile files
    never make numpy unpickle, allocate a huge array or read past the end."""
    try:
        version = npformat.read_magic(fp)
    except (ValueError, OSError, EOFError) as exc:
        raise FrameError(path, f"not a .npy file ({exc})") from None
    try:
        if version == (1, 0):
            shape, _fortran, dtype = npformat.read_array_header_1_0(
                fp, max_header_size=_MAX_HEADER_SIZE
            )
        elif version == (2, 0):
            shape, _fortran, dtype = npformat.read_array_header_2_0(
                fp, max_header_size=_MAX_HEADER_SIZE
            )
        else:
            raise FrameError(path, f"unsupported .npy format version {version[0]}.{version[1]}")
    except (ValueError, TypeError, OSError, EOFError, SyntaxError, tokenize.TokenError) as exc:
        # numpy's header parser lets TokenError and TypeError escape on some garbage.
        raise FrameError(path, f"corrupt .npy header ({exc})") from None
    if dtype.hasobject:
        raise FrameError(path, f"object dtype {dtype} refused (would need unpickling)")
    if dtype.kind not in "iuf":
        raise FrameError(path, f"non-numeric dtype {dtype} (need integer or float)")
    if len(shape) != 2:
        raise FrameError(path, f"expected a 2D array, got {len(shape)}D with shape {shape}")
    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        raise FrameError(
            path, f"shape {tuple(shape)} differs from expected {tuple(expected_shape)}"
        )
    need = math.prod(shape) * dtype.itemsize
    have = file_size - fp.tell()
    if have < need:
        raise FrameError(
            path, f"truncated: header promises {need} data bytes, file holds {max(have, 0)}"
        )


def load_frame(
    path: str | os.PathLike[str], expected_shape: Sequence[int] | None = None
) -> np.ndarray:
    """Read and validate one frame; returns float32 (exact for <=16-bit data) or float64.

    Raises FrameError for a missing, unreadable, truncated or corrupt file, an object,
    non-numeric or non-2D array, a shape other than ``expected_shape``, or any
    non-finite value. Pickled data is never loaded.
    """
    spath = os.fspath(path)
    try:
        with open(spath, "rb") as fp:
            _validate_header(spath, fp, os.fstat(fp.fileno()).st_size, expected_shape)
            fp.seek(0)
            arr = npformat.read_array(fp, allow_pickle=False, max_header_size=_MAX_HEADER_SIZE)
    except FileNotFoundError:
        raise FrameError(spath, "file not found") from None
    except (ValueError, OSError, EOFError) as exc:
        raise FrameError(spath, f"unreadable .npy file ({type(exc).__name__}: {exc})") from None
    target = np.float32 if arr.dtype.name in _EXACT_FLOAT32 else np.float64
    arr = np.ascontiguousarray(arr, dtype=target)
    if arr.dtype.kind == "f":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            raise FrameError(spath, f"{bad} non-finite value(s) (NaN or inf) of {arr.size}")
    return arr


def load_volume(
    directory: str | os.PathLike[str],
    pattern: FramePattern,
    region: int,
    scan: int,
    window: Sequence[int],
    expected_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Stack a region's frames of one scan in window order: shape (len(window), n1, n2).

    Without ``expected_shape`` the first frame's shape is the reference, so frames of
    one volume always agree. Frames of mixed dtypes are promoted to float64.
    """
    if len(window) == 0:
        raise ValueError(f"empty omega window for region {region}, scan {scan}")
    base = Path(directory)
    frames: list[np.ndarray] = []
    shape = tuple(expected_shape) if expected_shape is not None else None
    for frame in window:
        path = base / pattern.format(region=region, frame=frame, scan=scan)
        if not path.exists():
            raise FrameError(path, f"missing frame {frame} of region {region}, scan {scan}")
        arr = load_frame(path, shape)
        shape = arr.shape
        frames.append(arr)
    return np.stack(frames)


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
    re-checked (one ``stat``) on each poll until it has data; optionally a file is
    also held until its mtime is ``settle_s`` old, for producers that write in place.
    Names that match nothing are logged once at WARNING and then ignored.
    Subdirectories are descended down to the pattern's depth (the number of ``/``
    plus one); dot-directories never.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        pattern: FramePattern | str,
        *,
        racy_s: float = 2.0,
        settle_s: float = 0.0,
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
        return st.st_size > 0 and (now_ns - st.st_mtime_ns) >= self.settle_s * 1e9

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
