"""MPI links: rank 0 dispatches, ranks 1..size-2 work, rank size-1 does statistics.

Waiting never busy-polls the CPU: MPICH's blocking receive spins, which on an
oversubscribed node (4 ranks on 2 cores) steals the workers' cycles, so every
wait here is an Iprobe loop that sleeps between probes (`Backoff`). The sleep
grows with the time already spent waiting, not with the number of probes: a
rank that has waited microseconds sleeps 50 us, so ping-pong stays fast; one
idle for long wakes 50 times a second and uses well under 1% of a core.
(A plain doubling backoff feeds back on itself: each side's reply is late
because the other side's sleep had grown, and both settle at the cap.)

A job with a volume (in-memory fan-out of detector frames) is two messages:
the pickled `VolumeJob` header (our own dataclass: job, shape, dtype), then the
array itself as a buffer (``Isend``/``Recv``, never pickled). Rank 0 does not
wait for the transfer: it keeps the array until the send completes and checks
its sends whenever it receives; the worker receives the array straight into
its own buffer right after the header (the transfer is already under way, so
that blocking receive is short).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from mpi4py import MPI

from mpitrack.schedule import Job
from mpitrack.transport.base import JobReport, JobRequest, WorkerMessage

# MPI message tags: what a message is (a job request, a report, a job, stop, a
# complete scan for the statistics rank).
TAG_REQUEST = 1
TAG_REPORT = 2
TAG_JOB = 3
TAG_STOP = 4
TAG_SCAN = 5
TAG_VOLUME = 6


@dataclass(frozen=True)
class VolumeJob:
    """The header of a job whose volume follows as a buffer message (TAG_VOLUME)."""

    job: Job
    shape: tuple[int, ...]
    dtype: str


class Backoff:
    """Sleeps between probes: 50 us for the first 2 ms of waiting, 1 ms up to
    100 ms, then a tenth of the time waited, at most 20 ms."""

    def __init__(self) -> None:
        self.since = time.monotonic()

    def reset(self) -> None:
        self.since = time.monotonic()

    def sleep(self) -> None:
        waited = time.monotonic() - self.since
        if waited < 2e-3:
            time.sleep(50e-6)
        elif waited < 0.1:
            time.sleep(1e-3)
        else:
            time.sleep(min(20e-3, waited / 10))


def wait_for_message(comm: MPI.Comm, source: int, status: MPI.Status) -> None:
    """Block until a message from ``source`` is waiting, sleeping between probes."""
    backoff = Backoff()
    while not comm.Iprobe(source=source, tag=MPI.ANY_TAG, status=status):
        backoff.sleep()


class MPIDispatcherLink:
    """Rank 0's link. With no statistics rank, ``local_stats`` is called in-process."""

    def __init__(
        self,
        comm: MPI.Comm,
        workers: Sequence[int],
        stats_rank: int | None,
        local_stats: Callable[[int], None] | None = None,
    ) -> None:
        self.comm = comm
        self._workers = tuple(workers)
        self.stats_rank = stats_rank
        self.local_stats = local_stats
        self._status = MPI.Status()
        self._backoff = Backoff()  # reset by every message: busy means responsive
        self._sending: list[tuple[MPI.Request, np.ndarray]] = []  # volumes on their way

    @property
    def workers(self) -> Sequence[int]:
        return self._workers

    def receive(self, timeout: float) -> list[WorkerMessage]:
        deadline = time.monotonic() + timeout
        messages: list[WorkerMessage] = []
        while True:
            self._sent()
            while self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=self._status):
                source, tag = self._status.Get_source(), self._status.Get_tag()
                message = self.comm.recv(source=source, tag=tag)
                if not isinstance(message, JobRequest | JobReport):
                    raise TypeError(f"unexpected message from rank {source}: {message!r}")
                messages.append(message)
            if messages:
                self._backoff.reset()
                return messages
            if time.monotonic() >= deadline:
                return messages
            self._backoff.sleep()

    def send_job(self, worker: int, job: Job, volume: np.ndarray | None = None) -> None:
        if volume is None:
            self.comm.send(job, dest=worker, tag=TAG_JOB)
            return
        volume = np.ascontiguousarray(volume)
        header = VolumeJob(job, tuple(volume.shape), volume.dtype.str)
        self.comm.send(header, dest=worker, tag=TAG_JOB)
        self._sending.append((self.comm.Isend(volume, dest=worker, tag=TAG_VOLUME), volume))

    def _sent(self) -> None:
        """Let go of the volumes whose sends completed."""
        if self._sending:
            self._sending = [(r, v) for r, v in self._sending if not r.Test()]

    @property
    def volumes_in_flight(self) -> int:
        return len(self._sending)

    def send_stop(self, worker: int) -> None:
        self.comm.send(None, dest=worker, tag=TAG_STOP)

    def scan_complete(self, scan: int) -> None:
        if self.stats_rank is not None:
            self.comm.send(scan, dest=self.stats_rank, tag=TAG_SCAN)
        elif self.local_stats is not None:
            self.local_stats(scan)

    def close(self) -> None:
        MPI.Request.Waitall([r for r, _ in self._sending])
        self._sending.clear()
        if self.stats_rank is not None:
            self.comm.send(None, dest=self.stats_rank, tag=TAG_STOP)


class MPIWorkerLink:
    def __init__(self, comm: MPI.Comm, dispatcher: int = 0) -> None:
        self.comm = comm
        self.dispatcher = dispatcher
        self.rank = comm.Get_rank()
        self._status = MPI.Status()
        self._volume: np.ndarray | None = None

    def next_job(self) -> Job | None:
        self._volume = None
        self.comm.send(JobRequest(self.rank), dest=self.dispatcher, tag=TAG_REQUEST)
        wait_for_message(self.comm, self.dispatcher, self._status)
        tag = self._status.Get_tag()
        message = self.comm.recv(source=self.dispatcher, tag=tag)
        if tag != TAG_JOB:
            return None
        if isinstance(message, VolumeJob):
            volume = np.empty(message.shape, dtype=np.dtype(message.dtype))
            self.comm.Recv(volume, source=self.dispatcher, tag=TAG_VOLUME)
            self._volume = volume
            return message.job
        return message

    def volume(self) -> np.ndarray | None:
        return self._volume

    def report(self, report: JobReport) -> None:
        self.comm.send(report, dest=self.dispatcher, tag=TAG_REPORT)


class MPIStatsLink:
    def __init__(self, comm: MPI.Comm, dispatcher: int = 0) -> None:
        self.comm = comm
        self.dispatcher = dispatcher
        self._status = MPI.Status()

    def next_scan(self) -> int | None:
        wait_for_message(self.comm, self.dispatcher, self._status)
        tag = self._status.Get_tag()
        message = self.comm.recv(source=self.dispatcher, tag=tag)
        return int(message) if tag == TAG_SCAN else None
