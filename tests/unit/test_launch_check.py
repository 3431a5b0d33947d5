"""A one-rank run inside a multi-task srun step is refused (srun without PMI)."""

from __future__ import annotations

import pytest

from mpitrack.errors import UsageError
from mpitrack.runtime import check_launch


def test_singletons_of_a_multi_task_step_are_refused() -> None:
    with pytest.raises(UsageError, match=r"srun started 4 tasks .* srun --mpi=pmi2"):
        check_launch(1, {"SLURM_STEP_NUM_TASKS": "4"})


@pytest.mark.parametrize(
    ("size", "environ"),
    [
        (4, {"SLURM_STEP_NUM_TASKS": "4"}),  # srun --mpi=pmi2
        (4, {"SLURM_STEP_NUM_TASKS": "1"}),  # mpiexec: Hydra's proxy step has one task
        (1, {"SLURM_STEP_NUM_TASKS": "1"}),  # srun -n 1
        (1, {}),  # not under srun
    ],
)
def test_other_launches_pass(size: int, environ: dict[str, str]) -> None:
    check_launch(size, environ)
