"""Track-oriented Multiple Hypothesis Tracking with N-scan pruning.

How it works, one scan at a time (see `MHT.step`):

1. Expand. Every track tree holds leaves: hypotheses about the track's
   history inside the open window, each with its own Kalman filter (kalman.py).
   Each live leaf branches into children for this scan:
   - persist: the track explains one gated spot alone (``D``);
   - missed detection (``M``); the ``max_misses``-th consecutive miss is death
     (``X``): a dead leaf emits no more rows;
   - overlap: two or three tracks explain one spot together (``O``); only
     groups whose members all sit inside the spot and whose summed intensity
     matches the spot's are enumerated. Members keep their own filters (a weak
     update towards the blob), which is what lets a group split again with
     identities restored: after the overlap each member simply persists on its
     own spot again (split = persist after O);
   - fragments: one track explains two adjacent spots whose intensities add
     up to its own (``F``): detection split its spot;
   - birth: every spot also starts a new tentative tree;
   - unusable scan (no volume): every track is predicted through it (``U``).
2. Score. Each leaf's score is the sum of log-likelihood ratios of its
   decisions inside the open window against "that spot was clutter":
   persist ``log Pd + log N(z) - log clutter + intensity term`` (intensity is
   a scalar Kalman filter on log intensity, updated by solo detections), miss
   ``log(1 - Pd)``, birth ``log(birth / clutter)``, overlap
   ``k log Pd + log N(z | group centroid) - log clutter + intensity(sum)``
   shared among the k members.
3. Solve. The best global hypothesis picks one leaf per confirmed tree and at
   most one per tentative tree, each spot explained at most once (an overlap
   group counts once), and overlap partners consistent. It is an exact
   integer program (scipy.optimize.milp / HiGHS), solved separately for every
   independent cluster of the gating graph; a cluster whose per-tree best
   leaves are already compatible (always the case for a single tree) is
   optimal without the solver. Clusters that need a search go to an exact
   branch and bound first (HiGHS costs milliseconds per call even for tiny
   programs) and to milp when that exceeds ``bnb_node_limit`` nodes, or always
   with ``solver: milp``.
4. Prune. Leaves far below their tree's best (``leaf_score_margin``) and all
   but the best ``max_leaves`` per tree are dropped (the chosen leaf is always
   kept, and next scan its missed-detection child is kept, which keeps the
   program feasible). Decisions older than ``n_scan`` scans are made final:
   only the descendants of the chosen leaf's oldest node survive.

Everything is deterministic: the same inputs give bit-identical outputs, and
the whole state is plain arrays and JSON (checkpoint.py), never pickle.

Layout (one file per stage; each stage a small class built from the config):

- ``state.py``: entries, leaves, trees, scan records, and which spots an
  entry claims (checkpoint.py imports only this);
- ``params.py``: `MHTParams`, the ``tracking:`` config section;
- ``bundle.py``: one scan's predictions and measurements as arrays;
- ``scoring.py``: the score terms;
- ``gating.py``: which spots each leaf may explain;
- ``generate.py``, ``overlap.py``: hypotheses (miss/death, persist,
  fragments, births; overlaps and deblending);
- ``solve.py``, ``solvers.py``: clusters and the global hypothesis (branch
  and bound, integer program);
- ``prune.py``: margin, unsupported overlaps, shadowed births, leaf cap,
  N-scan finalisation;
- ``rows.py``: the chosen hypothesis as rows, the ``overlapping`` flag;
- ``core.py``: `MHT`, the stages in order, one scan per `MHT.step`.
"""

from mpitrack.track.mht.core import MHT
from mpitrack.track.mht.params import MHTParams
from mpitrack.track.mht.state import KINDS, Entry, Leaf, MHTState, ScanRecord, Tree

__all__ = ["KINDS", "MHT", "Entry", "Leaf", "MHTParams", "MHTState", "ScanRecord", "Tree"]
