"""Exact solvers for one cluster of the global hypothesis (see solve.py).

- `IntegerProgram`: the problem as a 0/1 integer program for
  scipy.optimize.milp (HiGHS);
- `BranchAndBound`: an exact depth-first search in Python for small clusters
  (HiGHS costs milliseconds per call even for a 20-variable program), handing
  a cluster to its fallback when it needs more than ``node_limit`` nodes.

Both honour the same constraints and are exact, so they agree (a test checks
it); `solver_for` picks one from the config's ``tracking.solver``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from mpitrack.track.mht.params import MHTParams
from mpitrack.track.mht.solve import Groups, Solver, spot_uses
from mpitrack.track.mht.state import OVERLAP, EventKey, Leaf, SpotKey, Tree, claims

log = logging.getLogger(__name__)

_FREE = object()  # marker: spot not yet claimed in the branch and bound


@dataclass(frozen=True)
class IntegerProgram:
    """One 0/1 variable per leaf; rows: one leaf per tree, one use per spot, overlaps agree."""

    def solve(self, ctrees: list[Tree], groups: Groups) -> list[Leaf | None]:
        var: list[tuple[int, Leaf]] = []
        cost: list[float] = []
        for t, tree in enumerate(ctrees):
            top = max(lf.score for lf in tree.leaves) if tree.confirmed else 0.0
            for lf in tree.leaves:
                var.append((t, lf))
                cost.append(-(lf.score - top))  # shift: better conditioned, same optimum
        nvar = len(var)
        rows: list[dict[int, float]] = []
        lo: list[float] = []
        hi: list[float] = []
        for t, tree in enumerate(ctrees):
            rows.append({v: 1.0 for v, (tv, _) in enumerate(var) if tv == t})
            lo.append(1.0 if tree.confirmed else 0.0)
            hi.append(1.0)
        spot_rows: dict[SpotKey, dict[int, float]] = {}
        event_vars: dict[EventKey, dict[int, list[int]]] = {}
        for v, (t, lf) in enumerate(var):
            for e in lf.history:
                for key in spot_uses(e, ctrees[t], groups):
                    spot_rows.setdefault(key, {})[v] = 1.0
                if e.kind == OVERLAP:
                    event_vars.setdefault((e.scan, e.group), {}).setdefault(
                        ctrees[t].uid, []
                    ).append(v)
        for key in sorted(spot_rows):
            rows.append(spot_rows[key])
            lo.append(0.0)
            hi.append(1.0)
        for key in sorted(event_vars):
            members = groups[key[0]][key[1]][1]
            rep = event_vars[key].get(members[0], [])
            for u in members[1:]:
                row = {v: 1.0 for v in rep}
                for v in event_vars[key].get(u, []):
                    row[v] = row.get(v, 0.0) - 1.0
                rows.append(row)
                lo.append(0.0)
                hi.append(0.0)
        a = np.zeros((len(rows), nvar))
        for k, row in enumerate(rows):
            for v, c in row.items():
                a[k, v] = c
        res = milp(
            np.array(cost),
            constraints=LinearConstraint(a, np.array(lo), np.array(hi)),
            integrality=np.ones(nvar),
            bounds=Bounds(0.0, 1.0),
            options={"mip_rel_gap": 0.0},
        )
        pick: list[Leaf | None] = [None] * len(ctrees)
        if res.x is None or not res.success:
            log.warning(
                "MHT integer program failed (%s); keeping the previous hypothesis", res.message
            )
            for t, tree in enumerate(ctrees):
                inc = [lf for lf in tree.leaves if lf.incumbent]
                if tree.confirmed:
                    pick[t] = inc[0] if inc else tree.leaves[0]
            return pick
        for v, (t, lf) in enumerate(var):
            if res.x[v] > 0.5:
                pick[t] = lf
        return pick


# One option of one tree in the search: score, leaf (None: tentative tree
# dropped), spot claims, its overlap events, checks against earlier trees
# (event, tree position) and requirements it imposes on later ones.
_Option = tuple[
    float,
    Leaf | None,
    tuple[tuple[SpotKey, EventKey | None], ...],
    frozenset[EventKey],
    list[tuple[EventKey, int]],
    list[tuple[int, EventKey]],
]


@dataclass(frozen=True)
class BranchAndBound:
    """Exact depth-first branch and bound; the fallback solves clusters past node_limit nodes.

    Same constraints as the integer program (one leaf per confirmed tree, at
    most one per tentative tree, one use per spot, an overlap group shared by
    all its members) and an admissible bound (each undecided tree at its
    best), which proves optimality just the same. Ties keep the first option
    in (score, leaf order), so it is deterministic.
    """

    node_limit: int
    fallback: Solver = field(default_factory=IntegerProgram)

    def solve(self, ctrees: list[Tree], groups: Groups) -> list[Leaf | None]:
        exact = self.search(ctrees, groups)
        return exact if exact is not None else self.fallback.solve(ctrees, groups)

    @staticmethod
    def _options(ctrees: list[Tree], groups: Groups) -> list[list[_Option]] | None:
        pos = {t.uid: k for k, t in enumerate(ctrees)}
        options: list[list[_Option]] = []
        for k, tree in enumerate(ctrees):
            opts: list[_Option] = []
            for lf in tree.leaves:
                evs = [(e.scan, e.group) for e in lf.history if e.kind == OVERLAP]
                members = [(ev, pos.get(u)) for ev in evs for u in groups[ev[0]][ev[1]][1]]
                if any(d is None for _, d in members):
                    continue  # a partner outside this cluster cannot agree
                checks = [(ev, d) for ev, d in members if d is not None and d < k]
                pushes = [(d, ev) for ev, d in members if d is not None and d > k]
                held = tuple(c for e in lf.history for c in claims(e))
                opts.append((lf.score, lf, held, frozenset(evs), checks, pushes))
            if not tree.confirmed:
                opts.append((0.0, None, (), frozenset(), [], []))
            if not opts:
                return None
            opts.sort(key=lambda o: -o[0])  # stable: ties keep leaf order
            options.append(opts)
        return options

    def search(self, ctrees: list[Tree], groups: Groups) -> list[Leaf | None] | None:
        """The exact best pick, or None when it needs more than node_limit nodes."""
        options = self._options(ctrees, groups)
        if options is None:
            return None
        walk = _Search(options, self.node_limit)
        if not walk.visit(0, 0.0) or walk.best_pick is None:
            return None
        return [options[k][a][1] for k, a in enumerate(walk.best_pick)]


class _Search:
    """One depth-first search over a cluster's options (`BranchAndBound.search`).

    A small object rather than a recursive closure: a closure that calls
    itself holds itself, and the whole search would wait for the cyclic
    garbage collector instead of being freed when it returns.
    """

    def __init__(self, options: list[list[_Option]], node_limit: int) -> None:
        n = len(options)
        self.options = options
        self.n = n
        self.by_event: list[dict[EventKey, set[int]]] = []
        for opts in options:
            index: dict[EventKey, set[int]] = {}
            for a, o in enumerate(opts):
                for ev in o[3]:
                    index.setdefault(ev, set()).add(a)
            self.by_event.append(index)
        self.suffix = [0.0] * (n + 1)  # each later tree at its best: the bound
        for k in range(n - 1, -1, -1):
            self.suffix[k] = self.suffix[k + 1] + options[k][0][0]
        self.used: dict[SpotKey, EventKey | None] = {}
        self.picked = [0] * n
        self.picked_events: list[frozenset[EventKey]] = [frozenset()] * n
        self.required: list[list[EventKey]] = [[] for _ in range(n)]
        self.best_score = -math.inf
        self.best_pick: list[int] | None = None
        self.nodes = 0
        self.node_limit = node_limit

    def visit(self, k: int, score: float) -> bool:
        """Try every option of tree k onwards; False when the node limit is passed."""
        self.nodes += 1
        if self.nodes > self.node_limit:
            return False
        if k == self.n:
            if score > self.best_score:
                self.best_score, self.best_pick = score, list(self.picked)
            return True
        used, required = self.used, self.required
        if required[k]:  # an earlier partner fixed this tree's overlap
            by_event = self.by_event[k]
            allowed = set.intersection(*(by_event.get(ev, set()) for ev in required[k]))
            candidates: list[int] | range = sorted(allowed)
        else:
            candidates = range(len(self.options[k]))
        for a in candidates:
            sc, _, held, evs, checks, pushes = self.options[k][a]
            if score + sc + self.suffix[k + 1] <= self.best_score:
                break  # sorted by score: no later option can do better
            if any(ev not in self.picked_events[d] for ev, d in checks):
                continue
            added: list[SpotKey] = []
            clash = False
            for key, ev in held:
                owner = used.get(key, _FREE)
                if owner is _FREE:
                    used[key] = ev
                    added.append(key)
                elif ev is None or owner != ev:
                    clash = True
                    break
            if not clash:
                self.picked[k], self.picked_events[k] = a, evs
                for d, ev in pushes:
                    required[d].append(ev)
                if not self.visit(k + 1, score + sc):
                    return False
                for d, _ in pushes:
                    required[d].pop()
            for key in added:
                del used[key]
        return True


def solver_for(params: MHTParams) -> Solver:
    """The solver the config asks for (``tracking.solver``)."""
    if params.solver == "milp":
        return IntegerProgram()
    return BranchAndBound(params.bnb_node_limit, IntegerProgram())
