"""The role loops reach their peers and their storage only through interfaces.

roles/ is written against transport/base.py and storage/base.py, so the same
loops run over MPI, in one process or over Redis, on any store: a role module
that imported a transport, a database driver or the SQL modules directly would
tie them to one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROLES = Path(__file__).resolve().parents[2] / "mpitrack" / "roles"
FORBIDDEN = (
    "mpi4py",
    "redis",
    "psycopg",
    "mpitrack.store",
    "mpitrack.storage.postgres",
    "mpitrack.stats.query",
    "mpitrack.stats.storage",
    "mpitrack.transport.local",
    "mpitrack.transport.mpi",
    "mpitrack.transport.redis",
    "mpitrack.transport.redis_streams",
    "mpitrack.transport.redis_worker",
)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(ROLES.glob("*.py")), ids=lambda p: p.name)
def test_a_role_module_imports_no_transport_and_no_storage_backend(path: Path) -> None:
    found = {
        name
        for name in imported_modules(path)
        for banned in FORBIDDEN
        if name == banned or name.startswith(banned + ".")
    }
    assert not found, f"{path.name} imports {sorted(found)}"
