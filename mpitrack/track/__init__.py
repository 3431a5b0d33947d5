"""Pure tracking library: volumes and tracker state in, per-track results and new state out.

Nothing in this package does I/O, talks MPI or touches a database; see docs/architecture.md.
"""
