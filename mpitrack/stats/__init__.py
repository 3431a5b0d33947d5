"""Per-scan statistics of the tracking results."""
