"""How roles talk: MPI messages, in-process calls, or Redis streams."""
