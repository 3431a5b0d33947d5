"""What the database benchmarks share: a scratch database and the JSON they print.

The database lives on the server of ``--database-url`` or, without one, on an
embedded PostgreSQL in a temporary directory; it is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mpitrack import services, store


@contextlib.contextmanager
def scratch_database(
    name: str,
    database_url: str | None,
    *,
    experiment: str | None = None,
    keep: bool = False,
) -> Iterator[tuple[str, Path]]:
    """(url of a new database, a temporary work directory); with ``experiment``, its
    schema applied. The directory goes afterwards unless ``keep``."""
    # Not under a 0700 temp root: an embedded PostgreSQL runs as another user under root.
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    workdir.chmod(0o755)
    try:
        with services.resolved_services(workdir, database_url, None, need_redis=False) as urls:
            assert urls.database_url is not None
            url = store.create_database(urls.database_url, name)
            try:
                if experiment is not None:
                    with store.connect(url, experiment, retries=0) as conn:
                        store.apply_schema(conn)
                yield url, workdir
            finally:
                store.drop_database(urls.database_url, url)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def print_result(result: dict[str, Any], database_url: str | None, json_path: Path | None) -> None:
    """Print the result as JSON (and write it to ``json_path``), naming the server kind."""
    result["server"] = "embedded" if database_url is None else "given"
    text = json.dumps(result, indent=2)
    print(text)
    if json_path is not None:
        json_path.write_text(text + "\n", encoding="utf-8")
