"""Role loops (dispatcher, worker, statistics), written against the links in
mpitrack.transport.base so the same code runs over MPI, in one process, or over Redis."""
