"""At-a-glance alerts: the few sentences at the top of the report.

The report's first job is to answer, half awake: are the spots broadening,
are tracks being lost, are detections failing, are spots piling up on each
other? Each rule compares the newest scan with a baseline (the first scans
of the run) or with the previous scans, and says so in words with the
numbers. The thresholds are deliberately simple and printed in the report, so
nobody has to guess why a line is red.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from mpitrack.stats.summary import ScanStats, relative_change


@dataclass(frozen=True)
class Thresholds:
    """When a line turns into an alert.

    broadening: relative rise of a median FWHM over the baseline (median of the
        first ``baseline_scans`` scans' medians).
    track_loss: drop of live tracks relative to the most of the previous
        ``window`` scans.
    deaths: deaths in the newest scan as a fraction of the previous scan's live tracks.
    missed: missed detections as a fraction of live tracks in the newest scan.
    overlap: overlapping fraction of the detected spots in the newest scan.
    """

    broadening: float = 0.10
    track_loss: float = 0.10
    deaths: float = 0.05
    missed: float = 0.10
    overlap: float = 0.20
    baseline_scans: int = 3
    window: int = 5


@dataclass(frozen=True)
class Alert:
    level: str  # "alert" or "ok"
    text: str


def _baseline(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def alerts(
    stats: Sequence[ScanStats], width_quantities: Sequence[str], t: Thresholds = Thresholds()
) -> list[Alert]:
    """Alerts about the newest scan of ``stats``; one "ok" line when nothing is wrong."""
    ordered = sorted(stats, key=lambda s: s.scan)
    if not ordered:
        return [Alert("ok", "No scan has completed yet.")]
    new = ordered[-1]
    out: list[Alert] = []
    base_scans = ordered[: t.baseline_scans]
    for q in width_quantities:
        base = _baseline([s.distribution(q).p50 for s in base_scans])
        now = new.distribution(q).p50
        change = relative_change(now, base)
        if change is not None and change > t.broadening and len(ordered) > len(base_scans):
            axis = q.removeprefix("width_")
            out.append(
                Alert(
                    "alert",
                    f"Spots broadening along {axis}: median FWHM {now:.2f} voxels in scan "
                    f"{new.scan}, {change:+.0%} over the first scans ({base:.2f}).",
                )
            )
    previous = ordered[-1 - t.window : -1]
    if previous:
        most = max(s.live_tracks for s in previous)
        if most and (most - new.live_tracks) / most > t.track_loss:
            out.append(
                Alert(
                    "alert",
                    f"Tracks being lost: {new.live_tracks} live tracks in scan {new.scan}, "
                    f"down {(most - new.live_tracks) / most:.0%} from {most}.",
                )
            )
        before = previous[-1].live_tracks
        if before and new.deaths / before > t.deaths:
            out.append(
                Alert(
                    "alert",
                    f"{new.deaths} tracks ended in scan {new.scan} "
                    f"({new.deaths / before:.0%} of the previous scan's tracks; "
                    f"{new.births} born).",
                )
            )
    if new.missed_fraction is not None and new.missed_fraction > t.missed:
        out.append(
            Alert(
                "alert",
                f"Missed detections: {new.missed} of {new.live_tracks} live tracks "
                f"({new.missed_fraction:.0%}) had no spot in scan {new.scan}.",
            )
        )
    if new.overlap_fraction is not None and new.overlap_fraction > t.overlap:
        out.append(
            Alert(
                "alert",
                f"Overlaps: {new.overlapping} of {new.detected} spots "
                f"({new.overlap_fraction:.0%}) are shared by several tracks in scan {new.scan}.",
            )
        )
    if not out:
        out.append(
            Alert(
                "ok",
                f"Scan {new.scan}: no broadening over {t.broadening:.0%}, no track loss, "
                f"misses and overlaps within limits.",
            )
        )
    return out


def describe(t: Thresholds = Thresholds()) -> str:
    return (
        f"Alert when a median FWHM rises more than {t.broadening:.0%} over the median of the "
        f"first {t.baseline_scans} scans, live tracks drop more than {t.track_loss:.0%} below "
        f"the most of the previous {t.window} scans, deaths exceed {t.deaths:.0%} of the "
        f"previous scan's tracks, misses exceed {t.missed:.0%} of live tracks, or overlaps "
        f"exceed {t.overlap:.0%} of spots."
    )
