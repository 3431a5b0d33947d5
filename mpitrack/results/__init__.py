"""Results for scientists: what the stored rows mean, typed views, a Python API, export.

``mpitrack.results.open(config_or_url, experiment=...)`` returns a `Results`
whose methods give tracks and measurements as pandas DataFrames or numpy
structured arrays (docs/results.md).
"""

from mpitrack.results.api import Results, open

__all__ = ["Results", "open"]
