"""Versioned, non-executable encoding of one region's MHT state.

Layout: an .npz archive (zip of .npy arrays, written with allow_pickle=False
and fixed timestamps so the same state gives the same bytes) holding a small
JSON header (window records, trees) and flat numeric arrays for the leaves and
their open history entries. Floats are stored as float64, so a restored
tracker continues bit for bit like the live one. The size depends on the open
window and the live hypotheses only, never on how many scans came before.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np

from mpitrack.track.mht.state import KINDS, Entry, Leaf, MHTState, ScanRecord, Tree

FORMAT_VERSION = 3  # 2: leaf_solo (solo detections per leaf); 3: the window's spot arrays
READABLE_VERSIONS = (2, 3)  # 2 is upgraded on load (spot arrays from the features JSON)
_MAGIC = "mpitrack-mht"
_IU = np.triu_indices(6)
_IU3 = np.triu_indices(3)


class CheckpointError(ValueError):
    """The bytes are not a readable mpitrack tracker checkpoint."""


class CheckpointVersionError(CheckpointError):
    """The checkpoint was written by another format version."""

    def __init__(self, found: int, expected: int = FORMAT_VERSION) -> None:
        readable = ", ".join(str(v) for v in READABLE_VERSIONS)
        super().__init__(
            f"tracker checkpoint has format version {found}, this mpitrack reads version "
            f"{expected} (and {readable}); re-run the region from its first scan or use a "
            "matching mpitrack"
        )
        self.found = found
        self.expected = expected


def encode_state(state: MHTState) -> bytes:
    """Serialise the state (see module docstring)."""
    header: dict[str, Any] = {
        "magic": _MAGIC,
        "format_version": FORMAT_VERSION,
        "last_scan": state.last_scan,
        "next_uid": state.next_uid,
        "next_public_id": state.next_public_id,
        "voxels": state.voxels,
        "clutter": state.clutter,
        "window": [
            {
                "scan": rec.scan,
                "usable": rec.usable,
                "features": rec.features,
                "groups": [[spot, list(members)] for spot, members in rec.groups],
            }
            for rec in state.window
        ],
        "trees": [
            [t.uid, t.birth_scan, t.birth_spot, t.public_id, t.confirmed, len(t.leaves)]
            for t in state.trees
        ],
    }
    leaves = [lf for t in state.trees for lf in t.leaves]
    entries = [e for lf in leaves for e in lf.history]
    nl, ne = len(leaves), len(entries)
    ns = sum(len(rec.features) for rec in state.window)
    records = state.window
    arrays = {
        "header": np.frombuffer(json.dumps(header, allow_nan=False).encode(), dtype=np.uint8),
        "leaf_x": np.array([lf.x for lf in leaves], dtype=np.float64).reshape(nl, 6),
        "leaf_p": np.array([lf.p[_IU] for lf in leaves], dtype=np.float64).reshape(nl, 21),
        "leaf_width": np.array([lf.width[_IU3] for lf in leaves], dtype=np.float64).reshape(nl, 6),
        "leaf_intensity": np.array([lf.intensity for lf in leaves], dtype=np.float64),
        "leaf_intensity_var": np.array([lf.intensity_var for lf in leaves], dtype=np.float64),
        "leaf_score": np.array([lf.score for lf in leaves], dtype=np.float64),
        "leaf_misses": np.array([lf.misses for lf in leaves], dtype=np.int32),
        "leaf_solo": np.array([lf.solo for lf in leaves], dtype=np.int32),
        "leaf_flags": np.array(
            [int(lf.dead) | (int(lf.incumbent) << 1) for lf in leaves], dtype=np.uint8
        ),
        "leaf_nhist": np.array([len(lf.history) for lf in leaves], dtype=np.int32),
        "entry_scan": np.array([e.scan for e in entries], dtype=np.int64),
        "entry_kind": np.array([KINDS.index(e.kind) for e in entries], dtype=np.uint8),
        "entry_spot": np.array([e.spot for e in entries], dtype=np.int32),
        "entry_group": np.array([e.group for e in entries], dtype=np.int32),
        "entry_pos": np.array([e.pos for e in entries], dtype=np.float64).reshape(ne, 3),
        "entry_score": np.array([e.score for e in entries], dtype=np.float64),
        "spot_centre": _stack([rec.centres for rec in records], (3,)).reshape(ns, 3),
        "spot_cov": _stack([rec.covariances[:, _IU3[0], _IU3[1]] for rec in records], (6,)),
        "spot_intensity": _stack([rec.intensities for rec in records], ()).reshape(ns),
    }
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _stack(parts: list[np.ndarray], tail: tuple[int, ...]) -> np.ndarray:
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1, *tail) for a in parts]
    return np.concatenate(arrays) if arrays else np.zeros((0, *tail))


def _load(data: bytes) -> tuple[dict[str, Any], Any]:
    try:
        npz = np.load(io.BytesIO(data), allow_pickle=False)
        header = json.loads(bytes(npz["header"]).decode())
    except Exception as exc:  # any malformed input is one clear error
        raise CheckpointError(f"not a readable mpitrack tracker checkpoint: {exc}") from exc
    if not isinstance(header, dict) or header.get("magic") != _MAGIC:
        raise CheckpointError("not an mpitrack tracker checkpoint (bad header)")
    return header, npz


def _sym3(upper: np.ndarray) -> np.ndarray:
    w = np.zeros((3, 3))
    w[_IU3] = upper
    w.T[_IU3] = upper
    return w


def _restore_spots(
    window: list[ScanRecord], centre: np.ndarray, cov: np.ndarray, intensity: np.ndarray
) -> None:
    pos = 0
    for rec in window:
        n = len(rec.features)
        rec.centres = np.array(centre[pos : pos + n], dtype=np.float64).reshape(n, 3)
        rec.covariances = np.array([_sym3(u) for u in cov[pos : pos + n]]).reshape(n, 3, 3)
        rec.intensities = np.array(intensity[pos : pos + n], dtype=np.float64).reshape(n)
        pos += n


def _spots_from_features(window: list[ScanRecord]) -> None:
    """Format 2 kept no spot arrays: take them from the features detection wrote.

    Spots without those features (hand-made in tests) get zeros, which only
    makes a split in the next scans deblend to the blob's centre.
    """
    for rec in window:
        n = len(rec.features)
        rec.centres, rec.covariances = np.zeros((n, 3)), np.zeros((n, 3, 3))
        rec.intensities = np.zeros(n)
        for j, f in enumerate(rec.features):
            pos, cov, inten = f.get("position"), f.get("covariance"), f.get("intensity")
            if isinstance(pos, dict) and len(pos) == 3:
                rec.centres[j] = [float(v) for v in pos.values()]
            if isinstance(cov, list):
                rec.covariances[j] = np.asarray(cov, dtype=np.float64).reshape(3, 3)
            if isinstance(inten, (int, float)):
                rec.intensities[j] = float(inten)


def read_format_version(data: bytes) -> int:
    """The format version a checkpoint was written with."""
    header, _ = _load(data)
    return int(header["format_version"])


def decode_state(data: bytes) -> MHTState:
    """Inverse of `encode_state`; raises CheckpointVersionError for another version."""
    header, npz = _load(data)
    version = int(header.get("format_version", -1))
    if version not in READABLE_VERSIONS:
        raise CheckpointVersionError(version)
    try:
        a = {name: npz[name] for name in npz.files if name != "header"}
        window = [
            ScanRecord(
                scan=int(rec["scan"]),
                usable=bool(rec["usable"]),
                features=list(rec["features"]),
                groups=[(int(s), tuple(int(u) for u in m)) for s, m in rec["groups"]],
            )
            for rec in header["window"]
        ]
        if version >= 3:
            _restore_spots(window, a["spot_centre"], a["spot_cov"], a["spot_intensity"])
        else:
            _spots_from_features(window)
        entries = [
            Entry(
                scan=int(a["entry_scan"][k]),
                kind=KINDS[int(a["entry_kind"][k])],
                spot=int(a["entry_spot"][k]),
                group=int(a["entry_group"][k]),
                pos=(
                    float(a["entry_pos"][k, 0]),
                    float(a["entry_pos"][k, 1]),
                    float(a["entry_pos"][k, 2]),
                ),
                score=float(a["entry_score"][k]),
            )
            for k in range(a["entry_scan"].shape[0])
        ]
        leaves: list[Leaf] = []
        pos = 0
        for k in range(a["leaf_x"].shape[0]):
            p = np.zeros((6, 6))
            p[_IU] = a["leaf_p"][k]
            p.T[_IU] = a["leaf_p"][k]
            nh = int(a["leaf_nhist"][k])
            flags = int(a["leaf_flags"][k])
            leaves.append(
                Leaf(
                    x=np.array(a["leaf_x"][k], dtype=np.float64),
                    p=p,
                    intensity=float(a["leaf_intensity"][k]),
                    intensity_var=float(a["leaf_intensity_var"][k]),
                    misses=int(a["leaf_misses"][k]),
                    dead=bool(flags & 1),
                    incumbent=bool(flags & 2),
                    score=float(a["leaf_score"][k]),
                    history=entries[pos : pos + nh],
                    width=_sym3(a["leaf_width"][k]),
                    solo=int(a["leaf_solo"][k]),
                )
            )
            pos += nh
        trees: list[Tree] = []
        li = 0
        for uid, birth_scan, birth_spot, public_id, confirmed, nleaves in header["trees"]:
            trees.append(
                Tree(
                    int(uid),
                    int(birth_scan),
                    int(birth_spot),
                    int(public_id),
                    bool(confirmed),
                    leaves[li : li + int(nleaves)],
                )
            )
            li += int(nleaves)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CheckpointError(f"corrupt mpitrack tracker checkpoint: {exc}") from exc
    last = header["last_scan"]
    return MHTState(
        last_scan=None if last is None else int(last),
        next_uid=int(header["next_uid"]),
        next_public_id=int(header["next_public_id"]),
        window=window,
        trees=trees,
        voxels=None if header.get("voxels") is None else int(header["voxels"]),
        clutter=None if header.get("clutter") is None else float(header["clutter"]),
    )
