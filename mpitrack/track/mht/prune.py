"""Pruning: what the MHT forgets each scan, so that its hypotheses stay bounded.

Before the solve: leaves far below their tree's best (`MarginPruner`) and
overlap leaves whose partners no longer hold the same overlap
(`drop_unsupported_overlaps`). After it: new tentative tracks whose spot the
best hypothesis gave to an established track (`drop_shadowed_births`), all
but the best ``max_leaves`` leaves per tree (`LeafCap`; the chosen leaf is
always kept, and next scan its missed-detection child is kept too, which
keeps the program feasible), and decisions older than ``n_scan`` scans
(`finalize_oldest_scan`: only the descendants of the chosen leaf's oldest
node survive).
"""

from __future__ import annotations

from dataclasses import dataclass

from mpitrack.track.mht.solve import Groups, clusters, overlap_events
from mpitrack.track.mht.state import DEAD, OVERLAP, Choice, EventKey, MHTState, Tree, claims


@dataclass(frozen=True)
class PruneScores:
    """Leaf scores for pruning inside one tree, with each overlap's shared part added back.

    An overlap entry gives each of its k members only 1/k of the group's
    joint likelihood ratio; the partners hold the rest. Compared inside one
    tree, a member's overlap leaf therefore looks (k-1)/k of that ratio (~6
    nats per scan for a pair) worse than taking the spot alone, although
    jointly the overlap may be the better answer: a long merge would be
    pruned away before the solver ever saw it. Pruning ranks leaves by score
    plus that missing share (never less than the score).
    """

    overlap_base: float  # log Pd + log(overlap probability): a member's own part

    def of(self, tree: Tree, groups: Groups) -> list[float]:
        """Each leaf's rank; groups: the state's `groups_by_scan` (one per pruning pass)."""
        base = self.overlap_base
        out = []
        for lf in tree.leaves:
            bonus = 0.0
            for e in lf.history:
                if e.kind == OVERLAP:
                    k = len(groups[e.scan][e.group][1])
                    bonus += max(0.0, (k - 1) * (e.score - base))
            out.append(lf.score + bonus)
        return out


@dataclass(frozen=True)
class MarginPruner:
    """Drops leaves scoring more than ``margin`` nats below their tree's best alternative.

    For a tentative tree "no such track" (score 0) is an alternative too: a
    young track far less likely than clutter is forgotten, the chosen
    hypothesis' leaf always kept.
    """

    ranking: PruneScores
    margin: float

    def prune(self, state: MHTState) -> None:
        groups = state.groups_by_scan()
        for tree in state.trees:
            scores = self.ranking.of(tree, groups)
            best = max(scores) if tree.confirmed else max(*scores, 0.0)
            tree.leaves = [
                lf
                for lf, sc in zip(tree.leaves, scores, strict=True)
                if lf.incumbent or sc >= best - self.margin
            ]


@dataclass(frozen=True)
class ClusterCap:
    """Keeps at most ``max_leaves`` leaves in each cluster of competing trees.

    The bound on a step's cost: clutter links many young trees through the
    spots they compete for, and the exact solve grows with a cluster's leaves.
    Every tree keeps its best leaf and the chosen hypothesis' leaf; the rest of
    the budget goes to the best-ranked leaves of the cluster.
    """

    ranking: PruneScores
    max_leaves: int

    def prune(self, state: MHTState) -> None:
        if sum(len(t.leaves) for t in state.trees) <= self.max_leaves:
            return  # no cluster can exceed the budget
        groups = state.groups_by_scan()
        for ctrees in clusters(state.trees, groups):
            if sum(len(t.leaves) for t in ctrees) <= self.max_leaves:
                continue
            ranked: list[tuple[float, int, int]] = []
            keep: set[tuple[int, int]] = set()
            for t, tree in enumerate(ctrees):
                scores = self.ranking.of(tree, groups)
                best = max(range(len(scores)), key=lambda a: (scores[a], -a))
                for a, lf in enumerate(tree.leaves):
                    if a == best or lf.incumbent:
                        keep.add((t, a))
                    else:
                        ranked.append((-scores[a], t, a))
            ranked.sort()
            keep.update((t, a) for _, t, a in ranked[: max(0, self.max_leaves - len(keep))])
            for t, tree in enumerate(ctrees):
                tree.leaves = [lf for a, lf in enumerate(tree.leaves) if (t, a) in keep]


def drop_unsupported_overlaps(state: MHTState) -> None:
    """Remove overlap leaves whose partners no longer hold the same overlap; drop empty trees."""
    groups = state.groups_by_scan()
    while True:
        support: dict[EventKey, set[int]] = {}
        for tree in state.trees:
            for lf in tree.leaves:
                for e in lf.history:
                    if e.kind == OVERLAP:
                        support.setdefault((e.scan, e.group), set()).add(tree.uid)
        unsupported = {
            event
            for event, holders in support.items()
            if not set(groups[event[0]][event[1]][1]) <= holders
        }
        if not unsupported:
            break
        for tree in state.trees:
            tree.leaves = [lf for lf in tree.leaves if not overlap_events(lf) & unsupported]
    state.trees = [t for t in state.trees if t.leaves]


def drop_shadowed_births(state: MHTState, scan: int, chosen: Choice) -> None:
    """Forget new tentative tracks whose spot the best hypothesis gave to a confirmed track.

    Every spot starts a tentative tree; keeping the ones that lost their spot
    to an established track would double the search for nothing useful (if
    that spot really was a new track, its next detections start one).
    Unclaimed spots keep their trees, so clutter-vs-track revisions inside
    the window still happen.
    """
    claimed = set()
    for tree in state.trees:
        leaf = chosen.get(tree.uid)
        if tree.confirmed and leaf is not None:
            for e in leaf.history:
                if e.scan == scan:
                    claimed.update(key[1] for key, _ in claims(e))
    state.trees = [
        t
        for t in state.trees
        if not (t.birth_scan == scan and chosen.get(t.uid) is None and t.birth_spot in claimed)
    ]


@dataclass(frozen=True)
class LeafCap:
    """Keeps at most ``cap`` leaves per tree (the chosen one always); marks the incumbents."""

    ranking: PruneScores
    cap: int

    def prune(self, state: MHTState, chosen: Choice) -> None:
        groups = state.groups_by_scan()
        for tree in state.trees:
            best = chosen.get(tree.uid)
            for lf in tree.leaves:
                lf.incumbent = lf is best
            if len(tree.leaves) <= self.cap:
                continue
            scores = self.ranking.of(tree, groups)
            order = sorted(range(len(tree.leaves)), key=lambda a: (-scores[a], a))
            keep = [a for a in order if tree.leaves[a] is best]
            keep += [a for a in order if tree.leaves[a] is not best][: self.cap - len(keep)]
            tree.leaves = [tree.leaves[a] for a in sorted(keep)]


def unexplained_spots(state: MHTState, chosen: Choice) -> int | None:
    """Spots of the oldest open scan that no chosen track explains (None: unusable scan)."""
    rec = state.window[0]
    if not rec.usable:
        return None
    used = {
        key[1]
        for leaf in chosen.values()
        if leaf is not None
        for e in leaf.history
        if e.scan == rec.scan
        for key, _ in claims(e)
    }
    return len(rec.features) - len(used)


def finalize_oldest_scan(state: MHTState, chosen: Choice) -> None:
    """Make the oldest open scan final: keep only descendants of the chosen node."""
    f = state.window[0].scan
    kept: list[Tree] = []
    for tree in state.trees:
        if tree.birth_scan > f:
            kept.append(tree)
            continue
        leaf = chosen.get(tree.uid)
        if leaf is None:
            continue  # a tentative track that the final decision rejected
        node = leaf.history[0]
        if node.kind == DEAD:
            continue  # its death is final
        key = node.key()
        tree.leaves = [lf for lf in tree.leaves if lf.history[0].key() == key]
        for lf in tree.leaves:
            lf.score -= lf.history[0].score
            lf.history = lf.history[1:]
        tree.confirmed = True
        kept.append(tree)
    state.trees = kept
    state.window = state.window[1:]
