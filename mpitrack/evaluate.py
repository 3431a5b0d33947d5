"""Tracking accuracy against ground truth: HOTA, CLEAR MOT, identity and overlap flags.

The metrics follow TrackEval (Luiten et al. 2020, "HOTA: A Higher Order
Metric for Evaluating Multi-Object Tracking", and its reference code) with a
point similarity instead of box IoU:

    S(d) = max(0, 1 - d / zero_distance)

where d is the Euclidean distance in region-local voxel units (omega, axis1,
axis2) and ``zero_distance`` (default 3 voxels) is where similarity reaches 0.

Each region is one sequence (true and tracker ids are per region); a scan is a
time step. Only visible truth records and ``detected = true`` tracker rows
take part. Sequences combine as in TrackEval: detection and identity counts
add up; AssA, AssRe, AssPr and LocA are weighted by their true positives.

HOTA, DetA, AssA, DetRe, DetPr, AssRe, AssPr, LocA
    Per alpha in 0.05, 0.10 .. 0.95: per-scan Hungarian matching maximising
    the global alignment score x similarity, a match counting when S >= alpha;
    then averaged over the 19 alphas.
MOTA, MOTP, IDSW, Frag, MT/PT/ML, RMSE
    CLEAR MOT with a match when S >= 0.5 (d <= zero_distance / 2), matches of
    the previous scan kept when still valid. IDSW: a true track matched to a
    different tracker id than the last one it was matched to. Frag: times a
    true track's matched run resumes after an interruption. RMSE: root mean
    square distance over CLEAR matches.
IDF1, IDP, IDR
    Global one-to-one assignment of true to tracker ids maximising the
    scans where the two lie within the same S >= 0.5 gate.
overlap precision / recall
    Over CLEAR matches only (so the flag is judged where detection is right):
    precision = matched rows flagged overlapping by both / flagged by the
    tracker; recall = ... / flagged by the truth. Undefined (0/0) is null.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from mpitrack.sim.truth import GroundTruth

log = logging.getLogger(__name__)

# HOTA's similarity thresholds 0.05, 0.10 .. 0.95 (see the module docstring).
ALPHAS = np.arange(0.05, 0.99, 0.05)
EPS = np.finfo(float).eps
# Distance (voxels) at which similarity reaches 0; `mpitrack evaluate --zero-distance`.
DEFAULT_ZERO_DISTANCE = 3.0
# CLEAR MOT and IDF1 count a match at similarity >= this (TrackEval's value).
CLEAR_THRESHOLD = 0.5


class EvaluationError(ValueError):
    """Tracker output or ground truth that cannot be scored together."""


@dataclass(frozen=True)
class Detection:
    """One object (true or tracked) in one scan of one region."""

    region_id: int
    scan: int
    object_id: int
    position: tuple[float, float, float]
    overlapping: bool = False


@dataclass
class Timestep:
    gt_ids: np.ndarray
    gt_pos: np.ndarray
    gt_ovl: np.ndarray
    tr_ids: np.ndarray
    tr_pos: np.ndarray
    tr_ovl: np.ndarray


@dataclass
class SequenceData:
    """One region's detections, ids remapped to 0..n-1 per side."""

    steps: list[Timestep]
    n_gt_ids: int
    n_tr_ids: int


def similarity(gt_pos: np.ndarray, tr_pos: np.ndarray, zero_distance: float) -> np.ndarray:
    """Point similarity max(0, 1 - d / zero_distance), shape (n_gt, n_tr)."""
    if len(gt_pos) == 0 or len(tr_pos) == 0:
        return np.zeros((len(gt_pos), len(tr_pos)))
    d = np.linalg.norm(gt_pos[:, None, :] - tr_pos[None, :, :], axis=2)
    return np.maximum(0.0, 1.0 - d / zero_distance)


def build_sequence(truth: Iterable[Detection], tracked: Iterable[Detection]) -> SequenceData:
    """Group one region's detections by scan, remapping ids to dense indices."""
    gt_map: dict[int, int] = {}
    tr_map: dict[int, int] = {}
    by_scan: dict[int, tuple[list[Detection], list[Detection]]] = defaultdict(lambda: ([], []))
    for side, items, id_map in ((0, truth, gt_map), (1, tracked, tr_map)):
        seen: set[tuple[int, int]] = set()
        for det in items:
            key = (det.scan, det.object_id)
            if key in seen:
                who = "ground truth" if side == 0 else "tracker output"
                raise EvaluationError(
                    f"{who} has two rows for region {det.region_id}, track {det.object_id}, "
                    f"scan {det.scan}"
                )
            seen.add(key)
            id_map.setdefault(det.object_id, len(id_map))
            by_scan[det.scan][side].append(det)
    steps = []
    for scan in sorted(by_scan):
        gts, trs = by_scan[scan]
        steps.append(
            Timestep(
                gt_ids=np.array([gt_map[d.object_id] for d in gts], dtype=int),
                gt_pos=np.array([d.position for d in gts], dtype=float).reshape(-1, 3),
                gt_ovl=np.array([d.overlapping for d in gts], dtype=bool),
                tr_ids=np.array([tr_map[d.object_id] for d in trs], dtype=int),
                tr_pos=np.array([d.position for d in trs], dtype=float).reshape(-1, 3),
                tr_ovl=np.array([d.overlapping for d in trs], dtype=bool),
            )
        )
    return SequenceData(steps, len(gt_map), len(tr_map))


# ---------------------------------------------------------------- HOTA


def hota_counts(seq: SequenceData, zero_distance: float) -> dict[str, np.ndarray]:
    """Additive HOTA counts of one sequence (per alpha): TP, FN, FP and weighted sums."""
    n_a = len(ALPHAS)
    tp, fn, fp, loc = (np.zeros(n_a) for _ in range(4))
    out = {"tp": tp, "fn": fn, "fp": fp, "loc_sum": loc}
    if seq.n_gt_ids == 0 or seq.n_tr_ids == 0:
        fn += sum(len(s.gt_ids) for s in seq.steps)
        fp += sum(len(s.tr_ids) for s in seq.steps)
        out.update(ass_a_sum=np.zeros(n_a), ass_re_sum=np.zeros(n_a), ass_pr_sum=np.zeros(n_a))
        return out
    sims = [similarity(s.gt_pos, s.tr_pos, zero_distance) for s in seq.steps]
    potential = np.zeros((seq.n_gt_ids, seq.n_tr_ids))
    gt_count = np.zeros((seq.n_gt_ids, 1))
    tr_count = np.zeros((1, seq.n_tr_ids))
    for s, sim in zip(seq.steps, sims, strict=True):
        if sim.size:
            denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
            sim_iou = np.zeros_like(sim)
            ok = denom > EPS
            sim_iou[ok] = sim[ok] / denom[ok]
            potential[s.gt_ids[:, None], s.tr_ids[None, :]] += sim_iou
        gt_count[s.gt_ids] += 1
        tr_count[0, s.tr_ids] += 1
    global_score = potential / (gt_count + tr_count - potential)
    matches = np.zeros((n_a, seq.n_gt_ids, seq.n_tr_ids))
    for s, sim in zip(seq.steps, sims, strict=True):
        n_gt, n_tr = len(s.gt_ids), len(s.tr_ids)
        if n_gt == 0 or n_tr == 0:
            fn += n_gt
            fp += n_tr
            continue
        score = global_score[s.gt_ids[:, None], s.tr_ids[None, :]] * sim
        rows, cols = linear_sum_assignment(-score)
        for a, alpha in enumerate(ALPHAS):
            ok = sim[rows, cols] >= alpha - EPS
            r, c = rows[ok], cols[ok]
            n = len(r)
            tp[a] += n
            fn[a] += n_gt - n
            fp[a] += n_tr - n
            if n:
                loc[a] += sim[r, c].sum()
                matches[a, s.gt_ids[r], s.tr_ids[c]] += 1
    ass_a, ass_re, ass_pr = (np.zeros(n_a) for _ in range(3))
    for a in range(n_a):
        m = matches[a]
        ass_a[a] = (m * (m / np.maximum(1, gt_count + tr_count - m))).sum()
        ass_re[a] = (m * (m / np.maximum(1, gt_count))).sum()
        ass_pr[a] = (m * (m / np.maximum(1, tr_count))).sum()
    out.update(ass_a_sum=ass_a, ass_re_sum=ass_re, ass_pr_sum=ass_pr)
    return out


def hota_final(c: Mapping[str, np.ndarray]) -> dict[str, float]:
    """HOTA and its sub-metrics from (summed) counts, averaged over alphas."""
    tp, fn, fp = c["tp"], c["fn"], c["fp"]
    det_re = tp / np.maximum(1, tp + fn)
    det_pr = tp / np.maximum(1, tp + fp)
    det_a = tp / np.maximum(1, tp + fn + fp)
    ass_a = c["ass_a_sum"] / np.maximum(1e-10, tp)
    ass_re = c["ass_re_sum"] / np.maximum(1e-10, tp)
    ass_pr = c["ass_pr_sum"] / np.maximum(1e-10, tp)
    loc_a = np.maximum(1e-10, c["loc_sum"]) / np.maximum(1e-10, tp)
    hota = np.sqrt(det_a * ass_a)
    return {
        "HOTA": float(hota.mean()),
        "DetA": float(det_a.mean()),
        "AssA": float(ass_a.mean()),
        "DetRe": float(det_re.mean()),
        "DetPr": float(det_pr.mean()),
        "AssRe": float(ass_re.mean()),
        "AssPr": float(ass_pr.mean()),
        "LocA": float(loc_a.mean()),
        "HOTA(0)": float(hota[0]),
    }


# ---------------------------------------------------------------- CLEAR MOT


def clear_counts(seq: SequenceData, zero_distance: float) -> dict[str, float]:
    """Additive CLEAR MOT counts of one sequence, plus overlap-flag and distance sums."""
    c = dict.fromkeys(
        ("tp", "fn", "fp", "idsw", "frag", "motp_sum", "sq_dist_sum", "mt", "pt", "ml",
         "flag_tp", "flag_fp", "flag_fn", "flag_tn"),
        0.0,
    )  # fmt: skip
    prev_id = np.full(seq.n_gt_ids, np.nan)  # last tracker id each true track matched
    prev_step_id = np.full(seq.n_gt_ids, np.nan)  # tracker id matched in the previous scan
    gt_count = np.zeros(seq.n_gt_ids)
    gt_matched = np.zeros(seq.n_gt_ids)
    gt_frag = np.zeros(seq.n_gt_ids)
    for s in seq.steps:
        n_gt, n_tr = len(s.gt_ids), len(s.tr_ids)
        gt_count[s.gt_ids] += 1
        if n_gt == 0 or n_tr == 0:
            c["fn"] += n_gt
            c["fp"] += n_tr
            prev_step_id[:] = np.nan
            continue
        sim = similarity(s.gt_pos, s.tr_pos, zero_distance)
        score = 1000.0 * (s.tr_ids[None, :] == prev_step_id[s.gt_ids][:, None]) + sim
        score[sim < CLEAR_THRESHOLD - EPS] = 0
        rows, cols = linear_sum_assignment(-score)
        ok = score[rows, cols] > EPS
        rows, cols = rows[ok], cols[ok]
        m_gt, m_tr = s.gt_ids[rows], s.tr_ids[cols]
        prev = prev_id[m_gt]
        c["idsw"] += float(np.sum(~np.isnan(prev) & (prev != m_tr)))
        not_before = np.isnan(prev_step_id)
        prev_id[m_gt] = m_tr
        prev_step_id[:] = np.nan
        prev_step_id[m_gt] = m_tr
        gt_frag += not_before & ~np.isnan(prev_step_id)
        gt_matched[m_gt] += 1
        n = len(rows)
        c["tp"] += n
        c["fn"] += n_gt - n
        c["fp"] += n_tr - n
        c["motp_sum"] += float(sim[rows, cols].sum())
        c["sq_dist_sum"] += float(np.sum((s.gt_pos[rows] - s.tr_pos[cols]) ** 2))
        t_flag, p_flag = s.gt_ovl[rows], s.tr_ovl[cols]
        c["flag_tp"] += float(np.sum(t_flag & p_flag))
        c["flag_fp"] += float(np.sum(~t_flag & p_flag))
        c["flag_fn"] += float(np.sum(t_flag & ~p_flag))
        c["flag_tn"] += float(np.sum(~t_flag & ~p_flag))
    present = gt_count > 0
    ratio = gt_matched[present] / gt_count[present]
    c["mt"] = float(np.sum(ratio > 0.8))
    c["ml"] = float(np.sum(ratio < 0.2))
    c["pt"] = float(len(ratio)) - c["mt"] - c["ml"]
    c["frag"] = float(np.sum(gt_frag[gt_frag > 0] - 1))
    return c


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def clear_final(c: Mapping[str, float]) -> dict[str, Any]:
    tp, fn, fp = c["tp"], c["fn"], c["fp"]
    return {
        "MOTA": (tp - fp - c["idsw"]) / max(1.0, tp + fn),
        "MOTP": c["motp_sum"] / max(1.0, tp),
        "IDSW": int(c["idsw"]),
        "Frag": int(c["frag"]),
        "MT": int(c["mt"]),
        "PT": int(c["pt"]),
        "ML": int(c["ml"]),
        "CLR_TP": int(tp),
        "CLR_FN": int(fn),
        "CLR_FP": int(fp),
        "RMSE": math.sqrt(c["sq_dist_sum"] / tp) if tp > 0 else None,
        "overlap_precision": _ratio(c["flag_tp"], c["flag_tp"] + c["flag_fp"]),
        "overlap_recall": _ratio(c["flag_tp"], c["flag_tp"] + c["flag_fn"]),
        "overlap_counts": {k: int(c[f"flag_{k}"]) for k in ("tp", "fp", "fn", "tn")},
    }


# ---------------------------------------------------------------- identity


def identity_counts(seq: SequenceData, zero_distance: float) -> dict[str, float]:
    """IDTP/IDFN/IDFP of one sequence (Ristani et al. 2016, as in TrackEval)."""
    n_gt, n_tr = seq.n_gt_ids, seq.n_tr_ids
    gt_count = np.zeros(n_gt)
    tr_count = np.zeros(n_tr)
    potential = np.zeros((n_gt, n_tr))
    for s in seq.steps:
        sim = similarity(s.gt_pos, s.tr_pos, zero_distance)
        if sim.size:
            potential[s.gt_ids[:, None], s.tr_ids[None, :]] += sim >= CLEAR_THRESHOLD - EPS
        gt_count[s.gt_ids] += 1
        tr_count[s.tr_ids] += 1
    if n_gt == 0 or n_tr == 0:
        return {"idtp": 0.0, "idfn": float(gt_count.sum()), "idfp": float(tr_count.sum())}
    size = n_gt + n_tr
    fp_mat = np.zeros((size, size))
    fn_mat = np.zeros((size, size))
    fp_mat[n_gt:, :n_tr] = 1e10
    fn_mat[:n_gt, n_tr:] = 1e10
    for g in range(n_gt):
        fn_mat[g, :n_tr] = gt_count[g]
        fn_mat[g, n_tr + g] = gt_count[g]
    for t in range(n_tr):
        fp_mat[:n_gt, t] = tr_count[t]
        fp_mat[t + n_gt, t] = tr_count[t]
    fn_mat[:n_gt, :n_tr] -= potential
    fp_mat[:n_gt, :n_tr] -= potential
    rows, cols = linear_sum_assignment(fn_mat + fp_mat)
    idfn = float(fn_mat[rows, cols].sum())
    idfp = float(fp_mat[rows, cols].sum())
    return {"idtp": float(gt_count.sum()) - idfn, "idfn": idfn, "idfp": idfp}


def identity_final(c: Mapping[str, float]) -> dict[str, float]:
    idtp, idfn, idfp = c["idtp"], c["idfn"], c["idfp"]
    return {
        "IDF1": idtp / max(1.0, idtp + 0.5 * idfp + 0.5 * idfn),
        "IDR": idtp / max(1.0, idtp + idfn),
        "IDP": idtp / max(1.0, idtp + idfp),
        "IDTP": int(idtp),
        "IDFN": int(idfn),
        "IDFP": int(idfp),
    }


# ---------------------------------------------------------------- combining


def _add(total: dict[str, Any], part: Mapping[str, Any]) -> None:
    for k, v in part.items():
        total[k] = total[k] + v if k in total else (v.copy() if isinstance(v, np.ndarray) else v)


def score_sequences(seqs: Sequence[SequenceData], zero_distance: float) -> dict[str, Any]:
    """Every metric over a set of sequences (regions), combined as TrackEval does."""
    hota: dict[str, Any] = {}
    clear: dict[str, Any] = {}
    ident: dict[str, Any] = {}
    n_gt_dets = n_tr_dets = n_gt_ids = n_tr_ids = 0
    for seq in seqs:
        _add(hota, hota_counts(seq, zero_distance))
        _add(clear, clear_counts(seq, zero_distance))
        _add(ident, identity_counts(seq, zero_distance))
        n_gt_dets += sum(len(s.gt_ids) for s in seq.steps)
        n_tr_dets += sum(len(s.tr_ids) for s in seq.steps)
        n_gt_ids += seq.n_gt_ids
        n_tr_ids += seq.n_tr_ids
    if not seqs:
        empty = SequenceData([], 0, 0)
        hota, clear, ident = (
            hota_counts(empty, zero_distance),
            clear_counts(empty, zero_distance),
            identity_counts(empty, zero_distance),
        )
    return {
        **hota_final(hota),
        **identity_final(ident),
        **clear_final(clear),
        "regions": len(seqs),
        "gt_dets": n_gt_dets,
        "tracker_dets": n_tr_dets,
        "gt_tracks": n_gt_ids,
        "tracker_tracks": n_tr_ids,
    }


# ---------------------------------------------------------------- inputs


def truth_detections(truth: GroundTruth) -> dict[int, list[Detection]]:
    """Visible truth records per region."""
    out: dict[int, list[Detection]] = {r.id: [] for r in truth.regions}
    for rec in truth.records:
        if rec.visible:
            out.setdefault(rec.region_id, []).append(
                Detection(rec.region_id, rec.scan, rec.track_id, rec.position, rec.overlapping)
            )
    return out


def row_detection(row: Mapping[str, Any], axes: Sequence[str], where: str) -> Detection | None:
    """A tracker output row (export-file or database form) as a Detection; None if not detected."""
    try:
        if not bool(row["detected"]):
            return None
        features = row["features"]
        if isinstance(features, str):
            features = json.loads(features)
        pos = features["position"]
        position = tuple(float(pos[name]) for name in ("omega", *axes))
        region, track, scan = int(row["region_id"]), int(row["track_id"]), int(row["scan_number"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EvaluationError(
            f"{where}: not a tracker row with region_id, track_id, scan_number, detected, "
            f"overlapping and features.position.{{omega,{','.join(axes)}}} ({type(exc).__name__}: "
            f"{exc})"
        ) from None
    if not all(math.isfinite(x) for x in position):
        raise EvaluationError(f"{where}: non-finite position {position}")
    return Detection(region, scan, track, position, bool(row.get("overlapping", False)))  # type: ignore[arg-type]


def read_export(path: Path, axes: Sequence[str]) -> list[Detection]:
    """Detected rows of a JSON-lines export file."""
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvaluationError(f"{where}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise EvaluationError(f"{where}: expected a JSON object per line")
                det = row_detection(row, axes, where)
                if det is not None:
                    out.append(det)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: no such tracker output file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvaluationError(f"{path}: cannot read ({exc})") from None
    return out


def read_database(conn: Any, axes: Sequence[str]) -> list[Detection]:
    """Detected rows of the measurements table (conn: a psycopg connection)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT region_id, track_id, scan_number, detected, overlapping, features "
            "FROM measurements WHERE detected"
        )
        names = ("region_id", "track_id", "scan_number", "detected", "overlapping", "features")
        rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    out = []
    for row in rows:
        where = f"measurements row (region {row['region_id']}, track {row['track_id']}, " \
                f"scan {row['scan_number']})"  # fmt: skip
        det = row_detection(row, axes, where)
        if det is not None:
            out.append(det)
    return out


def check_match(truth: GroundTruth, tracked: Sequence[Detection], config: Any = None) -> None:
    """Refuse a ground truth that does not belong to this run (EvaluationError)."""
    problems = []
    known = {r.id for r in truth.regions}
    extra = sorted({d.region_id for d in tracked} - known)
    if extra:
        problems.append(f"tracker output has regions {extra[:10]} that the ground truth lacks")
    out_of_range = sorted(
        {d.scan for d in tracked if not truth.first_scan <= d.scan <= truth.last_scan}
    )
    if out_of_range:
        problems.append(
            f"tracker output has scans {out_of_range[:10]} outside the ground truth's "
            f"{truth.first_scan}..{truth.last_scan}"
        )
    if config is not None:
        fp = truth.fingerprint
        cfg_regions = {str(r.id): list(r.frames) for r in config.regions}
        if cfg_regions != fp["regions"]:
            problems.append("the config's regions (ids or omega windows) differ from the truth's")
        if config.scans.first != truth.first_scan or config.scans.last not in (
            None,
            truth.last_scan,
        ):
            problems.append(
                f"the config's scans {config.scans.first}..{config.scans.last} differ from the "
                f"truth's {truth.first_scan}..{truth.last_scan}"
            )
        shape = config.frames.shape
        if shape is not None and list(shape) != fp["region_shape"][1:]:
            problems.append(f"frame shape {list(shape)} != truth's {fp['region_shape'][1:]}")
        if config.frames.frames_per_scan != fp["frames_per_scan"]:
            problems.append("frames_per_scan differs from the truth's")
        if list(config.frames.axes) != fp["axes"]:
            problems.append(f"axes {list(config.frames.axes)} != truth's {fp['axes']}")
    if problems:
        raise EvaluationError("the ground truth does not match this run: " + "; ".join(problems))


def evaluate(
    truth: GroundTruth, tracked: Sequence[Detection], zero_distance: float = DEFAULT_ZERO_DISTANCE
) -> dict[str, Any]:
    """Scores per scenario and overall."""
    if zero_distance <= 0:
        raise EvaluationError(f"zero distance must be > 0, got {zero_distance}")
    gt = truth_detections(truth)
    tr: dict[int, list[Detection]] = defaultdict(list)
    for d in tracked:
        tr[d.region_id].append(d)
    seqs: dict[int, SequenceData] = {
        rid: build_sequence(gt.get(rid, []), tr.get(rid, [])) for rid in sorted(gt)
    }
    by_scenario: dict[str, list[SequenceData]] = defaultdict(list)
    for region in truth.regions:
        by_scenario[region.scenario].append(seqs[region.id])
    return {
        "zero_distance": zero_distance,
        "match_distance": zero_distance * (1 - CLEAR_THRESHOLD),
        "scenarios": {
            name: score_sequences(items, zero_distance)
            for name, items in sorted(by_scenario.items())
        },
        "overall": score_sequences(list(seqs.values()), zero_distance),
    }


TABLE_COLUMNS = (
    ("HOTA", "HOTA", "{:.3f}"),
    ("DetA", "DetA", "{:.3f}"),
    ("AssA", "AssA", "{:.3f}"),
    ("LocA", "LocA", "{:.3f}"),
    ("IDF1", "IDF1", "{:.3f}"),
    ("MOTA", "MOTA", "{:.3f}"),
    ("IDSW", "IDSW", "{:d}"),
    ("Frag", "Frag", "{:d}"),
    ("RMSE", "RMSE", "{:.3f}"),
    ("OvlP", "overlap_precision", "{:.3f}"),
    ("OvlR", "overlap_recall", "{:.3f}"),
    ("GT", "gt_dets", "{:d}"),
    ("Trk", "tracker_dets", "{:d}"),
)


def format_table(report: Mapping[str, Any]) -> str:
    """A fixed-width table: one row per scenario, then the overall row."""
    rows = [(name, m) for name, m in report["scenarios"].items()]
    rows.append(("overall", report["overall"]))
    width = max(8, *(len(n) for n, _ in rows))
    head = f"{'scenario':<{width}} {'reg':>3} " + " ".join(f"{h:>6}" for h, _, _ in TABLE_COLUMNS)
    lines = [head, "-" * len(head)]
    for name, m in rows:
        cells = []
        for _, key, fmt in TABLE_COLUMNS:
            value = m.get(key)
            cells.append(f"{'-' if value is None else fmt.format(value):>6}")
        lines.append(f"{name:<{width}} {m['regions']:>3} " + " ".join(cells))
    lines.append(
        f"(point similarity: zero at {report['zero_distance']:g} voxels; CLEAR/ID match "
        f"within {report['match_distance']:g}; OvlP/OvlR over CLEAR matches)"
    )
    return "\n".join(lines)
