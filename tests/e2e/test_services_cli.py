"""`mpitrack services up` prints lines that eval hands on to the processes started after it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from harness import MPITRACK

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_eval_of_services_up_reaches_child_processes() -> None:
    # Not under pytest's temp root (mode 0700): see tests/conftest.py.
    workdir = Path(tempfile.mkdtemp(prefix="mpitrack-services-cli-"))
    workdir.chmod(0o755)
    script = (
        f'eval "$({MPITRACK} -q services up --workdir {workdir})" && '
        'sh -c \'echo "db=$MPITRACK_DATABASE_URL"; echo "redis=$MPITRACK_REDIS_URL"\''
    )
    try:
        shown = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=90, check=True
        )
    finally:
        subprocess.run(
            [MPITRACK, "-q", "services", "down", "--workdir", str(workdir)],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(workdir, ignore_errors=True)
    lines = dict(line.split("=", 1) for line in shown.stdout.splitlines())
    assert lines["db"].startswith("postgresql://"), shown.stdout
    assert lines["redis"] == f"unix://{workdir}/services/redis/redis.sock", shown.stdout
