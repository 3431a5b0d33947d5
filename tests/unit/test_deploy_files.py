"""Static and dry-run checks of the HPC deployment files.

Apptainer is not packaged for Debian 12 and CI has no SGE or Slurm of its own
(scripts/sge-selftest and scripts/slurm-selftest bring up a real one where they
can), so these tests check what can be checked without them: the .def's header
and sections, that every mpitrack command and option the image and the job
scripts call exists in the CLI, the job scripts' directives, their bad-input
paths, run for real by bash up to the point where they would launch MPI, and
the Slurm job's launch line and stop signal with a stand-in launcher.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpitrack.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEF = ROOT / "apptainer" / "mpitrack.def"
SGE_JOB = ROOT / "sge" / "mpitrack.sge"
SLURM_JOB = ROOT / "slurm" / "mpitrack.sbatch"
SCRIPTS = [
    SGE_JOB,
    ROOT / "sge" / "services.sge",
    ROOT / "sge" / "submit.sh",
    SLURM_JOB,
    ROOT / "slurm" / "services.sbatch",
    ROOT / "slurm" / "submit.sh",
    ROOT / "scripts" / "sge-selftest",
    ROOT / "scripts" / "sge-up",
    ROOT / "scripts" / "sge-down",
    ROOT / "scripts" / "slurm-selftest",
    ROOT / "scripts" / "slurm-up",
    ROOT / "scripts" / "slurm-down",
]
SECTIONS = ("%labels", "%files", "%post", "%environment", "%runscript", "%test", "%help")


def def_sections() -> tuple[dict[str, str], dict[str, str]]:
    """The .def's header keywords and the body of each %section."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in DEF.read_text().splitlines():
        if re.match(r"^%\w+", line):
            current = line.split()[0]
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif line.strip() and not line.startswith("#"):
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
    return header, {name: "\n".join(body) for name, body in sections.items()}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("mpitrack has no subcommands")


def mpitrack_calls(text: str) -> list[list[str]]:
    """Every `mpitrack ...` command line in shell text, as argv after 'mpitrack'."""
    calls = []
    command = r"(?:^|\$\(|\}\"|\bexec|\.sif|&&|;|\|)\s*mpitrack\s+([^|;&)\n]*)"
    for line in text.replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in re.finditer(command, line):
            try:
                argv = shlex.split(match.group(1), comments=True)
            except ValueError:
                argv = match.group(1).split()
            calls.append(argv)
    return calls


def assert_cli_accepts(argv: list[str], where: str) -> str | None:
    """Check the subcommand and every --option of one call; return the subcommand."""
    commands = subcommands()
    words = [a for a in argv if a not in ("-q", "-v", "-vv")]
    if not words or words[0] == "$@":  # the runscript passes its arguments on
        return None
    if words[0].startswith("-"):
        assert words[0] == "--version", f"{where}: mpitrack {argv}"
        return None
    name = words[0]
    if name not in commands:
        return name
    known = {s for action in commands[name]._actions for s in action.option_strings}
    for word in words[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"{where}: mpitrack {name} has no option {word}"
    return name


def test_def_header_and_sections() -> None:
    header, sections = def_sections()
    assert header.get("Bootstrap") == "docker"
    assert re.fullmatch(r"debian:12[\w.-]*", header.get("From", "")), header
    for name in SECTIONS:
        assert name in sections and sections[name].strip(), f"{DEF}: {name} missing or empty"
    assert "exec mpitrack" in sections["%runscript"]


def test_def_commands_exist_in_the_cli() -> None:
    _, sections = def_sections()
    used = set()
    for name in ("%runscript", "%test", "%help", "%post"):
        for argv in mpitrack_calls(sections[name]):
            used.add(assert_cli_accepts(argv, f"{DEF} {name}"))
    assert {"run", "simulate"} <= used
    assert used - {None} <= set(subcommands()), used - set(subcommands())


def test_def_builds_mpi4py_against_an_mpich_abi_mpi() -> None:
    _, sections = def_sections()
    post = sections["%post"]
    assert re.search(r"\bmpich\b", post) and "libmpich-dev" in post
    assert "--no-binary=mpi4py" in post and "MPICC=mpicc" in post
    assert "[local]" not in post, "the mpich wheel would shadow the host MPI"
    assert 'assert "MPICH" in v' in sections["%test"]


def test_def_pins_every_dependency() -> None:
    _, sections = def_sections()
    constraints = (ROOT / "apptainer" / "constraints.txt").read_text().splitlines()
    pins = [line for line in constraints if line.strip() and not line.startswith("#")]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.]+", p) for p in pins), pins
    pinned = {p.split("==")[0].lower() for p in pins}
    assert {"mpi4py", "numpy", "scipy", "psycopg", "redis", "pyyaml", "h5py"} <= pinned
    assert "apptainer/constraints.txt" in sections["%files"]
    assert sections["%post"].count("-c /opt/mpitrack/constraints.txt") >= 2
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and f"mpitrack {version.group(1)}" in sections["%post"]


def test_def_copies_files_that_exist() -> None:
    _, sections = def_sections()
    for line in sections["%files"].splitlines():
        if line.strip():
            assert (ROOT / line.split()[0]).exists(), line


def test_sge_job_directives() -> None:
    directives = [
        line[3:].strip() for line in SGE_JOB.read_text().splitlines() if line.startswith("#$ ")
    ]
    wanted_directives = (r"-pe mpi \d+", "-cwd", "-j y", "-notify", r"-l h_rt=[\d:]+", "-S /bin/.*")
    for wanted in wanted_directives:
        assert any(re.fullmatch(wanted, d) for d in directives), f"{SGE_JOB}: no '#$ {wanted}'"
    text = SGE_JOB.read_text()
    assert re.search(r'"\$mpirun" -n "\$slots"', text)
    assert "trap 'request_stop SIGUSR2' USR2" in text


def test_slurm_job_directives() -> None:
    text = SLURM_JOB.read_text()
    for wanted in ("--ntasks=", "--time=", "--signal=B:USR2@"):
        assert f"#SBATCH {wanted}" in text, f"{SLURM_JOB}: no '#SBATCH {wanted}...'"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_is_executable(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_mpitrack_calls_exist_in_the_cli(script: Path) -> None:
    for argv in mpitrack_calls(script.read_text()):
        name = assert_cli_accepts(argv, str(script))
        # `stop` may be missing: the job scripts fall back to setting the Redis key.
        assert name in (None, "stop") or name in subcommands(), f"{script}: mpitrack {name}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_hosts_or_passwords_in_scripts(script: Path) -> None:
    text = script.read_text()
    assert not re.search(r"://[^\s'\"$]*:[^\s'\"@$]+@", text), "a password in a URL"
    assert not re.search(r"(?i)password\s*=\s*['\"]?\w", text), "a password"
    assert not re.search(r"://(?!\$|/)[a-z0-9-]+\.[a-z0-9.-]+", text), "a host name in a URL"


# -- bad input, run for real by bash (they stop before any MPI launch) -------


def run_job(
    script: Path, tmp_path: Path, env_lines: str, **env: str
) -> subprocess.CompletedProcess:
    config = tmp_path / "experiment.yaml"
    config.write_text("run: x\n")
    env_file = tmp_path / "mpitrack.env"
    env_file.write_text(f"MPITRACK_CONFIG={config}\n{env_lines}")
    full = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MPITRACK_ENV": str(env_file)}
    full.update(env)
    return subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60
    )


JOBS = [(SGE_JOB, "NSLOTS"), (SLURM_JOB, "SLURM_NTASKS")]


@pytest.mark.parametrize(("script", "slots_var"), JOBS, ids=["sge", "slurm"])
def test_fewer_than_two_slots_explains_the_role_layout(
    script: Path, slots_var: str, tmp_path: Path
) -> None:
    done = run_job(script, tmp_path, "", **{slots_var: "1"})
    assert done.returncode == 2
    assert f"{slots_var}=1: mpitrack needs at least 2" in done.stderr
    assert "rank 0 dispatches, ranks 1..N-2 track, rank N-1 computes statistics" in done.stderr


@pytest.mark.parametrize(("script", "slots_var"), JOBS, ids=["sge", "slurm"])
def test_missing_services_file_is_named(script: Path, slots_var: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "services.env"
    lines = f"MPITRACK_SERVICES_FILE={missing}\nMPITRACK_SERVICES_WAIT=0\n"
    done = run_job(script, tmp_path, lines, **{slots_var: "4"})
    assert done.returncode == 3
    assert f"services file {missing} not found after 0 s" in done.stderr


@pytest.mark.parametrize(("script", "slots_var"), JOBS, ids=["sge", "slurm"])
def test_stale_services_file_is_refused(script: Path, slots_var: str, tmp_path: Path) -> None:
    stale = tmp_path / "services.env"
    stale.write_text(
        "MPITRACK_DATABASE_URL='postgresql:///x'\nMPITRACK_REDIS_URL='redis:///0'\n"
        "MPITRACK_SERVICES_JOB='41'\nMPITRACK_SERVICES_HOST='node7'\n"
    )
    old = time.time() - 600
    os.utime(stale, (old, old))
    lines = f"MPITRACK_SERVICES_FILE={stale}\nMPITRACK_SERVICES_MAX_AGE=120\n"
    done = run_job(script, tmp_path, lines, **{slots_var: "4"})
    assert done.returncode == 3
    assert f"services file {stale} is stale" in done.stderr
    assert "job 41 on node7 is gone" in done.stderr


def test_services_file_with_foreign_lines_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "services.env"
    bad.write_text("MPITRACK_DATABASE_URL='x'\nrm -rf /tmp/x\n")
    done = run_job(SGE_JOB, tmp_path, f"MPITRACK_SERVICES_FILE={bad}\n", NSLOTS="4")
    assert done.returncode == 2
    assert f"services file {bad}: unexpected line" in done.stderr


def test_missing_env_file_is_named(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SGE_JOB)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "NSLOTS": "4"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"env file {tmp_path}/mpitrack.env not found" in done.stderr


# -- the Slurm job's launch line and stop signal, with a stand-in launcher ----

FAKE_LAUNCHER = """#!{python}
import os, signal, sys, time
print("argv:", " ".join(sys.argv[1:]), flush=True)
print("SLURM_EXPORT_ENV=" + os.environ.get("SLURM_EXPORT_ENV", ""), flush=True)
def stop(signum, frame):
    print("signal:", signal.Signals(signum).name, flush=True)
    sys.exit(0)
for signum in (signal.SIGTERM, signal.SIGUSR2):
    signal.signal(signum, stop)
if os.environ.get("LAUNCHER_READY"):  # wait for a signal
    open(os.environ["LAUNCHER_READY"], "w").close()
    time.sleep(60)
"""


def start_slurm_job(
    tmp_path: Path,
    launcher: str,
    extra_lines: str = "",
    ready: Path | None = None,
    job_id: str = "",
) -> subprocess.Popen:
    """The Slurm job script with external servers and a stand-in `launcher` that prints
    its arguments and the SLURM_EXPORT_ENV it was given; with ``ready``, it then touches
    that file and waits for a signal, which it prints."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / launcher
    fake.write_text(FAKE_LAUNCHER.format(python=sys.executable))
    fake.chmod(0o755)
    config = tmp_path / "experiment.yaml"
    config.write_text("run: x\n")
    env_file = tmp_path / "mpitrack.env"
    env_file.write_text(
        f"MPITRACK_CONFIG={config}\nMPITRACK_SERVICES=external\n"
        "MPITRACK_DATABASE_URL=postgresql://127.0.0.1:1/x\nMPITRACK_REDIS_URL=redis://127.0.0.1:1/0\n"
        f"MPITRACK_MPIRUN={launcher}\n{extra_lines}"
    )
    env = {
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "MPITRACK_ENV": str(env_file),
        "SLURM_NTASKS": "4",
        "SLURM_EXPORT_ENV": "NONE",  # as after sbatch --export=NONE
        "LAUNCHER_READY": str(ready or ""),
        "SLURM_JOB_ID": job_id,
    }
    return subprocess.Popen(
        ["bash", str(SLURM_JOB)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_ready(job: subprocess.Popen, ready: Path) -> None:
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert job.poll() is None, job.communicate()
        assert time.monotonic() < deadline, "the launcher did not start in 30 s"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("extra", "wanted"),
    [
        ("", "-n 4 --mpi=pmi2 mpitrack run"),
        ("MPITRACK_MPIRUN_ARGS=--mpi=pmix\n", "-n 4 --mpi=pmix mpitrack run"),
    ],
    ids=["default-pmi2", "own-mpi-type"],
)
def test_srun_launch_gets_a_pmi_and_the_whole_environment(
    tmp_path: Path, extra: str, wanted: str
) -> None:
    job = start_slurm_job(tmp_path, "srun", extra)
    out, _ = job.communicate(timeout=60)
    assert f"argv: {wanted} --config" in out and out.count("--mpi") == 1, out
    assert "SLURM_EXPORT_ENV=ALL" in out, out


@pytest.mark.parametrize(("launcher", "forwarded"), [("srun", "SIGUSR2"), ("mpirun", "SIGTERM")])
def test_usr2_stop_reaches_the_launcher_as_a_signal_it_forwards(
    tmp_path: Path, launcher: str, forwarded: str
) -> None:
    job = start_slurm_job(tmp_path, launcher, ready=tmp_path / "ready")
    wait_ready(job, tmp_path / "ready")
    job.send_signal(signal.SIGUSR2)  # scancel --batch --signal=USR2, or the time limit
    out, err = job.communicate(timeout=60)
    assert f"signal: {forwarded}" in out, (out, err)
    assert "stopped on SIGUSR2" in err, err


def test_launcher_not_on_path_is_named(tmp_path: Path) -> None:
    done = run_job(
        SLURM_JOB,
        tmp_path,
        "MPITRACK_SERVICES=external\nMPITRACK_DATABASE_URL=x\nMPITRACK_REDIS_URL=y\n"
        "MPITRACK_MPIRUN='srun --mpi=pmi2'\n",
        SLURM_NTASKS="4",
    )
    assert done.returncode == 2
    assert "MPITRACK_MPIRUN=srun --mpi=pmi2: no such command on PATH" in done.stderr


def mpich_world_hash(pmi_job_name: str) -> str:
    """MPICH's name for a job's shared memory: FNV-1a (32 bit) of the PMI job name, hex."""
    h = 2166136261
    for byte in pmi_job_name.encode():
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return f"{h:x}"


def test_mpich_world_hash_matches_the_segment_mpich_made_under_srun() -> None:
    # /dev/shm/mpich_shm_e200f4fa_0 was left by MPICH 5.0 ranks of job 9, step 0,
    # killed under srun --mpi=pmi2 on the self-test's Slurm.
    assert mpich_world_hash("9.0") == "e200f4fa"


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm")
def test_srun_launch_removes_a_stale_mpich_segment_of_its_job(tmp_path: Path) -> None:
    job_id = str(4_000_000_000 + os.getpid())  # above Slurm's job ids
    stale = Path(f"/dev/shm/mpich_shm_{mpich_world_hash(job_id + '.0')}_0")
    stale.write_text("left by a killed run of the same job")
    try:
        job = start_slurm_job(tmp_path, "srun", job_id=job_id)
        out, err = job.communicate(timeout=60)
        left = stale.exists()
    finally:
        stale.unlink(missing_ok=True)
    assert not left and f"removed {stale}" in err, err
    assert "argv: -n 4 --mpi=pmi2" in out
