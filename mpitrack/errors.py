"""Errors that the command line maps to exit codes.

Exit codes: 0 success, 1 jobs failed (the run finished with failures),
2 bad input (config, arguments, files), 3 a server could not be reached.
"""

from __future__ import annotations


class MpitrackError(Exception):
    """Base class of the errors mpitrack reports to the user in one line."""

    exit_code = 1


class UsageError(MpitrackError):
    """Bad input: a malformed config, a wrong argument, an unusable file."""

    exit_code = 2


class ConfigError(UsageError):
    """A config value is wrong; the message names the file and the key path."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


class ServiceUnavailable(MpitrackError):
    """PostgreSQL or Redis could not be reached after bounded retries."""

    exit_code = 3
