"""The stop request a signal makes: every entry point (`mpitrack run` and each
process-mode command) installs one and its loop polls it."""

from __future__ import annotations

import logging
import signal
from types import FrameType

log = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGTERM/SIGINT, and by SIGUSR1/SIGUSR2: SGE's -notify sends SIGUSR2 before
    a kill and SIGUSR1 before a suspend or at s_rt, and MPICH's mpiexec forwards them."""

    def __init__(self) -> None:
        self.requested = False

    def install(self, graceful: bool) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(signum, self._on_signal if graceful else self._ignore)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning(
            "%s received: finishing in-flight jobs, then stopping", signal.Signals(signum).name
        )
        self.requested = True

    @staticmethod
    def _ignore(signum: int, frame: FrameType | None) -> None:
        log.info("%s received: rank 0 decides when to stop", signal.Signals(signum).name)
