"""The global solve: the best set of leaves, one per confirmed tree, at most one per tentative tree.

Constraints: each spot explained at most once (an overlap group's members
share their spot, nobody else may take it; `state.claims` says which spots an
entry takes), and overlap partners consistent (every member of a group holds
that group). The problem splits into independent clusters of trees that
compete for spots; a cluster whose per-tree best leaves are already
compatible (always the case for a single tree) is optimal without a search.
The others go to a `Solver` (solvers.py), chosen from the config.
"""

from __future__ import annotations

from typing import Protocol

from mpitrack.track.mht.state import (
    CLAIMING,
    OVERLAP,
    Choice,
    Entry,
    EventKey,
    Leaf,
    MHTState,
    SpotKey,
    Tree,
    claims,
)

Groups = dict[int, list[tuple[int, tuple[int, ...]]]]  # scan -> its overlap groups


class Solver(Protocol):
    def solve(self, ctrees: list[Tree], groups: Groups) -> list[Leaf | None]:
        """The best leaf per tree of one cluster (None: tentative tree dropped)."""
        ...


def choose(state: MHTState, solver: Solver) -> Choice:
    """Best global hypothesis: tree uid -> chosen leaf (None = tentative tree dropped)."""
    groups = state.groups_by_scan()
    chosen: Choice = {}
    for ctrees in clusters(state.trees, groups):
        pick = independent_best(ctrees)
        if len(ctrees) > 1 and not feasible(ctrees, pick, groups):
            pick = solver.solve(ctrees, groups)
        for tree, leaf in zip(ctrees, pick, strict=True):
            chosen[tree.uid] = leaf
    return chosen


def clusters(trees: list[Tree], groups: Groups) -> list[list[Tree]]:
    """Trees linked by a spot some of their leaves both claim, or by a shared overlap."""
    index = {t.uid: a for a, t in enumerate(trees)}
    parent = list(range(len(trees)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first_user: dict[SpotKey, int] = {}
    for a, tree in enumerate(trees):
        # sibling leaves share their history's entries: visit each entry once
        entries = {id(e): e for lf in tree.leaves for e in lf.history if e.kind in CLAIMING}
        keys: set[SpotKey] = set()
        events: set[EventKey] = set()
        for e in entries.values():
            for key, event in claims(e):
                keys.add(key)
                if event is not None:
                    events.add(event)
        for key in keys:
            if (b := first_user.setdefault(key, a)) != a:
                union(a, b)
        for scan, g in events:
            for u in groups[scan][g][1]:
                if (b := index.get(u, a)) != a:
                    union(a, b)
    out: dict[int, list[Tree]] = {}
    for a, tree in enumerate(trees):
        out.setdefault(find(a), []).append(tree)
    return list(out.values())


def independent_best(ctrees: list[Tree]) -> list[Leaf | None]:
    """Each tree's best leaf on its own (a tentative tree only if it beats clutter)."""
    pick: list[Leaf | None] = []
    for tree in ctrees:
        best = max(tree.leaves, key=lambda lf: lf.score)  # first of equals
        pick.append(best if tree.confirmed or best.score > 0.0 else None)
    return pick


def spot_uses(e: Entry, tree: Tree, groups: Groups) -> list[SpotKey]:
    """The spots an entry uses up, an overlap group counting once (on its first member)."""
    return [
        key
        for key, event in claims(e)
        if event is None or groups[event[0]][event[1]][1][0] == tree.uid
    ]


def overlap_events(leaf: Leaf) -> set[EventKey]:
    """The overlap groups a leaf's history belongs to."""
    return {(e.scan, e.group) for e in leaf.history if e.kind == OVERLAP}


def feasible(ctrees: list[Tree], pick: list[Leaf | None], groups: Groups) -> bool:
    """Whether the picked leaves use every spot at most once and agree on their overlaps."""
    used: set[SpotKey] = set()
    events: dict[int, set[EventKey]] = {}
    for tree, leaf in zip(ctrees, pick, strict=True):
        if leaf is None:
            continue
        events[tree.uid] = overlap_events(leaf)
        for e in leaf.history:
            for key in spot_uses(e, tree, groups):
                if key in used:
                    return False
                used.add(key)
    for evs in events.values():
        for sc, g in evs:
            if any((sc, g) not in events.get(u, ()) for u in groups[sc][g][1]):
                return False
    return True
