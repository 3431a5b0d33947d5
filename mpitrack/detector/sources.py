"""Where raw detector frames come from: HDF5 stacks per scan, or one .npy per frame.

Both sources answer the same two questions for the cutter: which of these
frames of scan S can be read *completely* now (``ready``), and give me frame F
of scan S as one image per panel (``read``). Completeness is the whole point:

- HDF5 (one file per scan, or per scan and panel): a file is complete when
  ``ready: marker`` and the producer's marker (``<file>.done``) exists, or with
  ``ready: settle`` (the default) when its mtime is at least ``settle_s``
  seconds old *and* it opens under HDF5's file lock: a writer that
  holds the file open (non-SWMR) holds that lock, so a file still being written
  is not opened, however long the writer pauses. (Where locking is off, e.g.
  ``HDF5_USE_FILE_LOCKING=FALSE`` on some parallel file systems, settling is
  the only guard: use a marker there.) Then its dataset must exist and have
  three dimensions; frames beyond its length are never ready. A file that
  will not open (truncated, corrupt) is waited for, with one warning naming it.
- .npy (one file per omega frame and panel, written by rename): a file is
  complete when its header parses and the file holds every byte the header
  promises; a file being written in place is seen as truncated and waited for.

A frame is ready only when every panel's file is; a missing panel while another
panel's file for the same scan is complete is warned about once, naming the
missing file (or raised as DetectorError in strict mode: `mpitrack detector cut`
without --follow). Only one scan's files stay open at a time per scan in progress,
and a frame is read as one image per stored file, never a whole stack, so
memory stays bounded by a few frames.
"""

from __future__ import annotations

import logging
import os
import string
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.lib.format as npformat

from mpitrack.detector import DetectorError, RawFrameError
from mpitrack.detector.instrument import Instrument

log = logging.getLogger(__name__)

_hdf5plugin_tried = False

#: Spare frame buffers per stored-image shape an Hdf5Stacks source keeps for reuse
#: (a frame's buffers come back through ``recycle`` once the cutter is done with it).
SPARE_BUFFERS = 4


def _load_hdf5plugin() -> None:
    """Register the compression filters of hdf5plugin (bitshuffle, LZ4, Blosc...) if
    installed; Eiger data is usually bitshuffle-LZ4 compressed."""
    global _hdf5plugin_tried
    if not _hdf5plugin_tried:
        _hdf5plugin_tried = True
        try:
            import hdf5plugin  # noqa: F401
        except ImportError:
            log.debug("hdf5plugin not installed: only HDF5's built-in filters are available")


def _unavailable_filters(handle, dataset: str) -> list[str]:
    """Names of the dataset's compression filters that HDF5 has no decoder for.

    Without hdf5plugin, HDF5 answers a bitshuffle/LZ4 read with an error about a
    plugin directory; this tells a read error of that kind from a broken file.
    """
    import h5py

    try:
        plist = handle[dataset].id.get_create_plist()
        filters = [plist.get_filter(i) for i in range(plist.get_nfilters())]
    except (OSError, ValueError, KeyError):
        return []
    return [
        f"{name.decode(errors='replace') or 'filter'} (HDF5 filter {code})"
        for code, _flags, _values, name in filters
        if not h5py.h5z.filter_avail(code)
    ]


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def check_template(template: str, allowed: set[str], required: set[str], what: str) -> None:
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise ValueError(f"{what} {template!r} is not a valid format string: {exc}") from None
    unknown = fields - allowed
    if unknown:
        raise ValueError(
            f"{what} {template!r} has unknown field(s) "
            + ", ".join(sorted("{" + f + "}" for f in unknown))
        )
    missing = required - fields
    if missing:
        raise ValueError(
            f"{what} {template!r} lacks " + ", ".join(sorted("{" + f + "}" for f in missing))
        )


class FrameSource(Protocol):
    """What the cutter needs from raw data."""

    def ready(self, scan: int, wanted: Collection[int]) -> set[int]:
        """The frames of ``wanted`` whose every panel can be read completely now."""
        ...

    def read(self, scan: int, frame: int) -> list[np.ndarray]:
        """One image per panel (panel pixels, flips applied); raises RawFrameError."""
        ...

    def release(self, scan: int) -> None:
        """The cutter is done with the scan: close its files, forget its state."""
        ...

    def recycle(self, scan: int, frame: int) -> None:
        """The cutter is done with this frame's images: their buffers may be reused."""
        ...

    def close(self) -> None: ...


class _Warnings:
    """Warn once per (file, reason); raise instead in strict mode where asked."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str]] = set()

    def once(self, path: str, reason: str) -> None:
        if (path, reason) not in self._seen:
            self._seen.add((path, reason))
            log.warning("%s: %s", path, reason)


# ----------------------------------------------------------------------------- HDF5


@dataclass
class _FileState:
    size: int
    mtime_ns: int
    handle: object | None = None  # h5py.File once complete
    n_frames: int = 0
    direct: dict[str, _Direct | None] = field(default_factory=dict)  # per dataset
    fd: int | None = None


@dataclass(frozen=True)
class _Direct:
    """Where an uncompressed dataset's frames lie in the file, for plain ``preadv``.

    HDF5's own read copies through its buffers and holds the GIL; for a dataset
    without filters that is contiguous or chunked one frame per chunk, a frame is
    one run of bytes at a known offset, read straight into a numpy buffer (the
    GIL released, so the next frame is read while this one is cut).
    """

    dtype: np.dtype
    shape: tuple[int, int]
    offset: int  # contiguous: the data's start; chunked: -1 (ask per frame)
    nbytes: int


def _direct_layout(dset) -> _Direct | None:
    import h5py

    try:
        plist = dset.id.get_create_plist()
        if plist.get_nfilters() != 0 or dset.dtype.kind not in "iuf":
            return None
        shape = (int(dset.shape[1]), int(dset.shape[2]))
        nbytes = shape[0] * shape[1] * dset.dtype.itemsize
        layout = plist.get_layout()
        if layout == h5py.h5d.CONTIGUOUS:
            offset = dset.id.get_offset()
            return None if offset is None else _Direct(dset.dtype, shape, int(offset), nbytes)
        if layout == h5py.h5d.CHUNKED and tuple(dset.chunks) == (1, *shape):
            return _Direct(dset.dtype, shape, -1, nbytes)
    except (AttributeError, ValueError, OSError):
        pass
    return None


class Hdf5Stacks:
    """HDF5 files of per-scan frame stacks, ``dataset`` of shape (frames, rows, cols).

    ``files`` is a template relative to ``directory`` with {scan} and optionally
    {panel}; ``dataset`` may hold {panel} too. Panels that share a stored image
    (same file and dataset) are read with one read and cut by their offsets.
    """

    def __init__(
        self,
        instrument: Instrument,
        directory: str | os.PathLike[str],
        files: str,
        dataset: str,
        *,
        ready: str = "settle",
        settle_s: float = 1.0,
        marker_suffix: str = ".done",
        strict: bool = False,
        clock=time.time_ns,
    ) -> None:
        check_template(files, {"scan", "panel"}, {"scan"}, "detector.files")
        check_template(dataset, {"panel"}, set(), "detector.dataset")
        if ready not in ("settle", "marker"):
            raise ValueError(f"ready {ready!r} must be 'settle' or 'marker'")
        self.instrument = instrument
        self.directory = Path(directory)
        self.files = files
        self.dataset = dataset
        self.mode = ready
        self.settle_s = settle_s
        self.marker_suffix = marker_suffix
        self.strict = strict
        self.clock = clock
        self._states: dict[str, _FileState] = {}
        self._warn = _Warnings()
        # Frame buffers: spares by (shape, dtype), and those lent out per (scan, frame).
        self._spare: dict[tuple[tuple[int, int], str], list[np.ndarray]] = {}
        self._lent: dict[tuple[int, int], list[np.ndarray]] = {}
        _load_hdf5plugin()

    def _stores(self, scan: int) -> dict[tuple[str, str], list[int]]:
        """(file, dataset) -> indices of the panels stored there."""
        out: dict[tuple[str, str], list[int]] = {}
        for i, panel in enumerate(self.instrument.panels):
            path = str(self.directory / self.files.format(scan=scan, panel=panel.name))
            out.setdefault((path, self.dataset.format(panel=panel.name)), []).append(i)
        return out

    def _complete(self, path: str) -> _FileState | None:
        """The file's state when it is complete and open, else None."""
        state = self._states.get(path)
        if state is not None and state.handle is not None:
            return state
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._states.pop(path, None)
            return None
        state = _FileState(st.st_size, st.st_mtime_ns)
        self._states[path] = state
        age = (self.clock() - st.st_mtime_ns) / 1e9
        if self.mode == "marker":
            if not os.path.exists(path + self.marker_suffix):
                return None
        elif age < self.settle_s:
            return None
        import h5py

        try:
            handle = h5py.File(path, "r", locking=True)
        except OSError as exc:  # BlockingIOError (a writer holds it) or a broken file
            if age > max(10 * self.settle_s, 5.0) or self.mode == "marker":
                self._warn.once(path, f"not readable yet, waiting ({exc})")
            return None
        state.handle = handle
        return state

    def _check_dataset(self, state: _FileState, path: str, dataset: str, panels: list[int]):
        handle = state.handle
        try:
            dset = handle[dataset]  # type: ignore[index]
        except KeyError:
            raise DetectorError(
                f"{path}: no dataset {dataset!r} (detector.dataset); the file holds "
                f"{_listing(handle)}"
            ) from None
        if len(dset.shape) != 3:
            raise DetectorError(
                f"{path}: dataset {dataset!r} has shape {dset.shape}; expected (frames, rows, cols)"
            )
        for i in panels:
            spec = self.instrument.panels[i]
            need = spec.min_stored_shape
            if dset.shape[1] < need[0] or dset.shape[2] < need[1]:
                raise DetectorError(
                    f"{path}: dataset {dataset!r} frames are {dset.shape[1]} x {dset.shape[2]}, "
                    f"too small for panel {spec.name} ({spec.rows} x {spec.cols} at offset "
                    f"{list(spec.offset)})"
                )
        if dset.dtype.kind not in "iuf":
            raise DetectorError(f"{path}: dataset {dataset!r} has non-numeric dtype {dset.dtype}")
        if dataset not in state.direct:
            state.direct[dataset] = _direct_layout(dset)
            if state.direct[dataset] is not None and state.fd is None:
                state.fd = os.open(path, os.O_RDONLY)
        return dset

    def ready(self, scan: int, wanted: Collection[int]) -> set[int]:
        stores = self._stores(scan)
        complete, missing = [], []
        n_frames = self.instrument.frames_per_scan
        for (path, dataset), panels in stores.items():
            state = self._complete(path)
            if state is None:
                if not os.path.exists(path):
                    missing.append((path, panels))
                continue
            dset = self._check_dataset(state, path, dataset, panels)
            if dset.shape[0] < self.instrument.frames_per_scan:
                self._warn.once(
                    path,
                    f"dataset {dataset!r} holds {dset.shape[0]} of "
                    f"{self.instrument.frames_per_scan} frames; the rest never arrive",
                )
            n_frames = min(n_frames, dset.shape[0])
            complete.append(path)
        if missing and complete:
            names = ", ".join(self.instrument.panels[i].name for _, p in missing for i in p)
            message = (
                f"scan {scan}: panel {names}: file {missing[0][0]} is missing while "
                f"{complete[0]} is complete"
            )
            if self.strict:
                raise DetectorError(message)
            self._warn.once(missing[0][0], message)
        if missing or len(complete) < len(stores):
            return set()
        return {f for f in wanted if 0 <= f < n_frames}

    def read(self, scan: int, frame: int) -> list[np.ndarray]:
        images: list[np.ndarray | None] = [None] * len(self.instrument.panels)
        for (path, dataset), panels in self._stores(scan).items():
            state = self._states.get(path)
            if state is None or state.handle is None:
                raise RawFrameError(path, f"frame {frame} read before the file was complete")
            try:
                direct = state.direct.get(dataset)
                if direct is not None and state.fd is not None:
                    image = self._read_direct(state, dataset, direct, scan, frame)
                else:
                    image = np.asarray(state.handle[dataset][frame])  # type: ignore[index]
            except (OSError, ValueError, KeyError) as exc:
                missing = _unavailable_filters(state.handle, dataset)
                if missing:
                    raise RawFrameError(
                        path,
                        f"cannot read frame {frame} of {dataset}: it is compressed with "
                        f"{', '.join(missing)}, which this HDF5 cannot decode; install "
                        "hdf5plugin (pip install 'mpitrack[detector]')",
                    ) from None
                raise RawFrameError(
                    path, f"cannot read frame {frame} of {dataset}: {exc}"
                ) from None
            for i in panels:
                images[i] = self.instrument.panels[i].extract(image)
        return images  # type: ignore[return-value]

    def _buffer(self, direct: _Direct, scan: int, frame: int) -> np.ndarray:
        """A frame buffer for (scan, frame): a spare one given back by ``recycle``, or new.

        Reuse saves the page faults of a fresh 24 MB buffer per panel and frame
        (a third of the cutter's CPU per frame in benchmarks/ingest.py). A buffer
        is reused only after the cutter said it is done with the frame it held:
        a blind ring of buffers was tried once and was wrong (the reader thread
        prefetches the next frame, and a panel's buffer came round again while
        the cutter still sampled it; found by the end-to-end test comparing rank
        0's cuts with `mpitrack detector cut`).
        """
        spare = self._spare.get((direct.shape, direct.dtype.str))
        try:
            image = spare.pop() if spare else None
        except IndexError:  # the other thread took the last one
            image = None
        if image is None:
            image = np.empty(direct.shape, dtype=direct.dtype)
        self._lent.setdefault((scan, frame), []).append(image)
        return image

    def recycle(self, scan: int, frame: int) -> None:
        for image in self._lent.pop((scan, frame), []):
            spare = self._spare.setdefault((image.shape, image.dtype.str), [])
            if len(spare) < SPARE_BUFFERS:
                spare.append(image)

    def _read_direct(
        self, state: _FileState, dataset: str, direct: _Direct, scan: int, frame: int
    ) -> np.ndarray:
        if direct.offset >= 0:
            offset = direct.offset + frame * direct.nbytes
        else:
            info = state.handle[dataset].id.get_chunk_info_by_coord((frame, 0, 0))  # type: ignore[index]
            if info.byte_offset is None or info.size != direct.nbytes:
                raise ValueError(f"chunk of frame {frame} is missing or not {direct.nbytes} bytes")
            offset = info.byte_offset
        image = self._buffer(direct, scan, frame)
        got = os.preadv(state.fd, [image], offset)  # type: ignore[arg-type]
        if got != direct.nbytes:
            raise OSError(f"short read: {got} of {direct.nbytes} bytes at offset {offset}")
        return image

    def release(self, scan: int) -> None:
        for path, _ in self._stores(scan):
            _close(self._states.pop(path, None))
        for key in list(self._lent):  # buffers of failed reads
            if key[0] == scan:
                self._lent.pop(key, None)

    def close(self) -> None:
        for state in self._states.values():
            _close(state)
        self._states.clear()


def _close(state: _FileState | None) -> None:
    if state is None:
        return
    if state.handle is not None:
        state.handle.close()  # type: ignore[attr-defined]
    if state.fd is not None:
        os.close(state.fd)


def _listing(handle, limit: int = 8) -> str:
    names: list[str] = []

    def visit(name: str, obj) -> None:
        if hasattr(obj, "shape") and len(names) < limit:
            names.append("/" + name)

    handle.visititems(visit)
    return ", ".join(names) if names else "no datasets"


# ----------------------------------------------------------------------------- .npy


class NpyFrames:
    """One full-frame .npy per omega frame (and panel): ``files`` has {scan} and
    {frame}, and {panel} unless one stored image holds every panel."""

    def __init__(
        self,
        instrument: Instrument,
        directory: str | os.PathLike[str],
        files: str,
        *,
        strict: bool = False,
    ) -> None:
        check_template(files, {"scan", "frame", "panel"}, {"scan", "frame"}, "detector.files")
        self.instrument = instrument
        self.directory = Path(directory)
        self.files = files
        self.strict = strict
        self._complete: dict[int, set[str]] = {}
        self._warn = _Warnings()

    def _paths(self, scan: int, frame: int) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for i, panel in enumerate(self.instrument.panels):
            path = str(self.directory / self.files.format(scan=scan, frame=frame, panel=panel.name))
            out.setdefault(path, []).append(i)
        return out

    def _is_complete(self, path: str) -> bool:
        try:
            with open(path, "rb") as fp:
                size = os.fstat(fp.fileno()).st_size
                version = npformat.read_magic(fp)
                if version == (1, 0):
                    shape, _, dtype = npformat.read_array_header_1_0(fp)
                else:
                    shape, _, dtype = npformat.read_array_header_2_0(fp)
                need = fp.tell() + int(np.prod(shape)) * dtype.itemsize
        except FileNotFoundError:
            return False
        except (OSError, ValueError, EOFError, SyntaxError, TypeError):
            return False  # empty or half-written header: wait
        return size >= need

    def ready(self, scan: int, wanted: Collection[int]) -> set[int]:
        done = self._complete.setdefault(scan, set())
        out = set()
        for frame in wanted:
            paths = self._paths(scan, frame)
            present = []
            absent = []
            for path in paths:
                if path in done or self._is_complete(path):
                    done.add(path)
                    present.append(path)
                elif not os.path.exists(path):
                    absent.append(path)
            if len(present) == len(paths):
                out.add(frame)
            elif present and absent:
                message = (
                    f"scan {scan} frame {frame}: file {absent[0]} is missing while "
                    f"{present[0]} is complete"
                )
                if self.strict:
                    raise DetectorError(message)
                self._warn.once(absent[0], message)
        return out

    def read(self, scan: int, frame: int) -> list[np.ndarray]:
        images: list[np.ndarray | None] = [None] * len(self.instrument.panels)
        for path, panels in self._paths(scan, frame).items():
            try:
                image = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise RawFrameError(path, f"unreadable .npy: {exc}") from None
            if image.ndim != 2 or image.dtype.kind not in "iuf":
                raise DetectorError(
                    f"{path}: expected a 2D numeric image, got {image.ndim}D {image.dtype}"
                )
            for i in panels:
                try:
                    images[i] = self.instrument.panels[i].extract(image)
                except ValueError as exc:
                    raise DetectorError(f"{path}: {exc}") from None
        return images  # type: ignore[return-value]

    def release(self, scan: int) -> None:
        self._complete.pop(scan, None)

    def recycle(self, scan: int, frame: int) -> None:
        """Nothing to reuse: frames are memory-mapped."""

    def close(self) -> None:
        self._complete.clear()
