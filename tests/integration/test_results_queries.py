"""Every example query of docs/results.md, run against a real database.

The queries are read from the doc (fenced ```sql blocks that start with
``-- query: NAME``), so doc and test cannot diverge; each answer is checked
against one computed here in Python from the raw rows (the measurements
table's JSONB, not the view). The doc's Python example runs too.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from results_data import CHECKPOINTS, Row, fill_experiment, raw_rows

from mpitrack import store

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "results.md"
EXPERIMENT = "test"


def doc_queries() -> dict[str, str]:
    blocks = re.findall(r"```sql\n(-- query: (\w+)\n.*?)```", DOC.read_text(), re.DOTALL)
    return {name: text for text, name in blocks}


def doc_python_example() -> str:
    (block,) = re.findall(r"```python\n(# example: python\n.*?)```", DOC.read_text(), re.DOTALL)
    return block


@pytest.fixture
def conn(database_url: str):
    fill_experiment(database_url, EXPERIMENT)
    with store.connect(database_url, EXPERIMENT, retries=0) as c:
        yield c


# Expected answers from the raw rows, one function per documented query.


def trajectory(rows: list[Row]) -> list[tuple]:
    return sorted(
        (r.scan, *(r.f["position"][a] for a in ("omega", "eta", "tth")), r.detected, r.overlapping)
        for r in rows
        if r.region == 1 and r.track == 5
    )


def region_widths(rows: list[Row]) -> list[tuple]:
    return sorted(
        (r.track, r.scan, *(r.f["fwhm"][a] for a in ("omega", "eta", "tth")))
        for r in rows
        if r.region == 1 and r.clean
    )


def broadened_most(rows: list[Row]) -> list[tuple]:
    newest = max(r.scan for r in rows)
    then = {(r.region, r.track): r.f["fwhm"]["eta"] for r in rows if r.scan == 0 and r.clean}
    now = {(r.region, r.track): r.f["fwhm"]["eta"] for r in rows if r.scan == newest and r.clean}
    out = [(*k, then[k], now[k], now[k] / then[k] - 1) for k in then.keys() & now.keys()]
    return sorted(out, key=lambda t: (-t[4], t[0], t[1]))[:10]


def grew_more_than(rows: list[Row]) -> list[tuple]:
    clean: dict[tuple[int, int], list[Row]] = defaultdict(list)
    for r in rows:
        if r.clean:
            clean[(r.region, r.track)].append(r)
    out = []
    for key, spots in clean.items():
        first = min(spots, key=lambda r: r.scan)
        latest = max(spots, key=lambda r: r.scan)
        ratio = latest.f["fwhm"]["eta"] / first.f["fwhm"]["eta"]
        if ratio > 1.2:
            out.append((*key, first.scan, latest.scan, 100 * (ratio - 1)))
    return sorted(out)


def overlap_fraction(rows: list[Row]) -> list[tuple]:
    out = []
    for scan in sorted({r.scan for r in rows}):
        det = sum(r.detected for r in rows if r.scan == scan)
        ov = sum(r.overlapping for r in rows if r.scan == scan)
        out.append((scan, det, ov, ov / det if det else None))
    return out


def first_detections(rows: list[Row]) -> dict[tuple[int, int], int]:
    first: dict[tuple[int, int], int] = {}
    for r in rows:
        if r.detected:
            key = (r.region, r.track)
            first[key] = min(first.get(key, r.scan), r.scan)
    return first


def born_after(rows: list[Row]) -> list[tuple]:
    return sorted((*k, s) for k, s in first_detections(rows).items() if s > 3)


def lost_in_last_scan(rows: list[Row]) -> list[tuple]:
    present = {(r.region, r.track, r.scan) for r in rows}
    last_detected: dict[tuple[int, int], int] = {}
    for r in rows:
        if r.detected:
            key = (r.region, r.track)
            last_detected[key] = max(last_detected.get(key, r.scan), r.scan)
    out = []
    for region, track, scan in present:
        c = CHECKPOINTS[region]
        if scan == c - 1 and (region, track, c) not in present:
            out.append((region, track, last_detected.get((region, track))))
    return sorted(out)


def mean_widths(rows: list[Row]) -> list[tuple]:
    groups: dict[tuple[int, int], list[Row]] = defaultdict(list)
    for r in rows:
        if r.clean:
            groups[(r.region, r.scan)].append(r)
    return [
        (*k, len(g), *(sum(r.f["fwhm"][a] for r in g) / len(g) for a in ("omega", "eta", "tth")))
        for k, g in sorted(groups.items())
    ]


def most_missed(rows: list[Row]) -> list[tuple]:
    missed: dict[tuple[int, int], int] = defaultdict(int)
    scans: dict[tuple[int, int], int] = defaultdict(int)
    for r in rows:
        scans[(r.region, r.track)] += 1
        missed[(r.region, r.track)] += not r.detected
    out = [(*k, m, scans[k]) for k, m in missed.items() if m > 0]
    return sorted(out, key=lambda t: (-t[2], t[0], t[1]))[:10]


def final_through(rows: list[Row]) -> list[tuple]:
    return [(region, scan, scan - 3 + 1) for region, scan in sorted(CHECKPOINTS.items())]


EXPECTED: dict[str, Callable[[list[Row]], list[tuple]]] = {
    f.__name__: f
    for f in (
        trajectory,
        region_widths,
        broadened_most,
        grew_more_than,
        overlap_fraction,
        born_after,
        lost_in_last_scan,
        mean_widths,
        most_missed,
        final_through,
    )
}


def test_the_doc_has_every_expected_query_and_no_other():
    assert set(doc_queries()) == set(EXPECTED)


def same(got: list[tuple], want: list[tuple]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w)
        for a, b in zip(g, w, strict=True):
            if isinstance(b, float):
                assert float(a) == pytest.approx(b, rel=1e-9)
            else:
                assert a == b


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_documented_query_answers(conn: psycopg.Connection, name: str):
    rows = raw_rows(conn)
    want = EXPECTED[name](rows)
    assert want, f"the test data gives {name} nothing to find: the check would be empty"
    got = conn.execute(doc_queries()[name]).fetchall()
    conn.commit()
    same([tuple(r) for r in got], want)


def test_the_documented_python_example(conn: psycopg.Connection, database_url: str):
    code = doc_python_example()
    line = re.search(r"^source, experiment = .*$", code, re.MULTILINE)
    assert line is not None
    code = code.replace(line.group(0), f"source, experiment = {database_url!r}, {EXPERIMENT!r}")
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    want = broadened_most(raw_rows(conn))
    broadened = namespace["broadened"]
    assert [tuple(k) for k in broadened.index] == [(r, t) for r, t, *_ in want]
    assert list(broadened) == pytest.approx([g for *_, g in want])
    trajectory_rows = namespace["trajectory"]
    assert list(trajectory_rows.scan_number) == [t[0] for t in trajectory(raw_rows(conn))]
    assert set(namespace["tracks"].region_id) == {1}
