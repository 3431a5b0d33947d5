"""Build hook: the package's metadata is in pyproject.toml; this only ships sql/.

sql/ at the top of the repository is the source of truth for the database
schema and its migrations. The wheel needs them inside the package, so the
build copies them to mpitrack/sql/ (store.py looks there first, and falls back
to the top-level sql/ in a source checkout or an editable install).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SQL = Path(__file__).resolve().parent / "sql"


class BuildPyWithSQL(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "mpitrack" / "sql"
        for path in sorted(SQL.rglob("*.sql")):
            destination = target / path.relative_to(SQL)
            self.mkpath(str(destination.parent))
            self.copy_file(str(path), str(destination))


setup(cmdclass={"build_py": BuildPyWithSQL})
