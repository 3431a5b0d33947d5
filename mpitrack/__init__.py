"""mpitrack: real-time tracking of diffraction spots across the scans of an in-situ experiment."""

__version__ = "0.1.0"
