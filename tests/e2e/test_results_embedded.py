"""`mpitrack.results.open` on a config without a database URL starts the embedded server and
stops it again, also when the script never calls close()."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness import MPITRACK

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SCRIPT = """
import sys
import mpitrack.results
res = mpitrack.results.open(sys.argv[1])
print("experiment", res.experiment, "rows", len(res.measurements(output="numpy")))
"""


def test_an_unclosed_results_object_stops_its_embedded_server_at_exit() -> None:
    # Not under pytest's temp root (mode 0700): see tests/conftest.py.
    workdir = Path(tempfile.mkdtemp(prefix="mpitrack-results-embedded-"))
    workdir.chmod(0o755)
    config = workdir / "experiment.yaml"
    config.write_text(
        f"run: embedded_results\nworkdir: {workdir / 'work'}\n"
        "frames: {directory: frames}\nregions:\n- {id: 0, frames: [0, 5]}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPITRACK_DATABASE_URL"}
    pid_file = workdir / "work" / "services" / "postgres" / "postmaster.pid"
    try:
        init = subprocess.run(
            [MPITRACK, "-q", "db", "init", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert init.returncode == 0, init.stderr
        assert not pid_file.exists(), "db init left the server it started running"
        shown = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.split() == ["experiment", "embedded_results", "rows", "0"]
        assert "Traceback" not in shown.stderr and "Exception ignored" not in shown.stderr, (
            shown.stderr
        )
        assert not pid_file.exists(), "the embedded PostgreSQL outlived the script"
    finally:
        subprocess.run(
            [MPITRACK, "-q", "services", "down", "--workdir", str(workdir / "work")],
            capture_output=True,
            timeout=60,
            env=env,
        )
        shutil.rmtree(workdir, ignore_errors=True)
