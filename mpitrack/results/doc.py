"""The generated parts of docs/results.md, from the registry in keys.py and views.py.

docs/results.md marks each generated part with a pair of comments::

    <!-- BEGIN GENERATED: features -->
    ...
    <!-- END GENERATED: features -->

`render` replaces what is between them; tests/unit/test_results_doc.py fails
when the file differs from its rendering, so the doc cannot go stale.
Regenerate with ``python -m mpitrack.results.doc docs/results.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mpitrack.results.keys import FEATURES, MEASUREMENT_COLUMNS, TRACK_COLUMNS, Column
from mpitrack.results.views import DEFAULT_AXES, VIEW, view_columns, view_sql

_BLOCK = re.compile(
    r"(<!-- BEGIN GENERATED: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)"
    r"(<!-- END GENERATED: (?P=name) -->)",
    re.DOTALL,
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _columns_table(columns: Sequence[Column]) -> str:
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.sql_type} | {_cell(c.meaning)} |" for c in columns]
    return "\n".join(lines) + "\n"


def measurements_table() -> str:
    return _columns_table(MEASUREMENT_COLUMNS)


def tracks_table() -> str:
    return _columns_table(TRACK_COLUMNS)


def features_table() -> str:
    lines = ["| key | value | unit | rows | meaning |", "|---|---|---|---|---|"]
    for f in FEATURES:
        lines.append(
            f"| `{f.key}` | `{_cell(f.shape)}` | {f.unit or '–'} | {_cell(f.rows)} | "
            f"{_cell(f.meaning)} |"
        )
    return "\n".join(lines) + "\n"


def view_table() -> str:
    lines = [
        f"Columns of `{VIEW}` for the default axes {', '.join(DEFAULT_AXES)}:",
        "",
        "| column | type | unit | meaning |",
        "|---|---|---|---|",
    ]
    for c in view_columns(DEFAULT_AXES):
        lines.append(
            f"| `{c.name}` | {c.sql_type or 'as in measurements'} | {c.unit or '–'} | "
            f"{_cell(c.meaning)} |"
        )
    return "\n".join(lines) + "\n"


def view_definition() -> str:
    return "```sql\n" + view_sql(DEFAULT_AXES) + ";\n```\n"


SECTIONS: dict[str, Callable[[], str]] = {
    "measurements": measurements_table,
    "tracks": tracks_table,
    "features": features_table,
    "view_columns": view_table,
    "view_sql": view_definition,
}


def render(text: str) -> str:
    """``text`` with every generated block replaced by its current rendering."""
    found = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in SECTIONS:
            raise ValueError(f"unknown generated section {name!r}; known: {sorted(SECTIONS)}")
        found.add(name)
        return match.group(1) + SECTIONS[name]() + match.group(4)

    out = _BLOCK.sub(replace, text)
    missing = sorted(set(SECTIONS) - found)
    if missing:
        raise ValueError(f"the document lacks the generated sections {missing}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="regenerate docs/results.md's tables")
    parser.add_argument("path", type=Path)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    new = render(text)
    if args.check:
        return int(new != text)
    if new != text:
        args.path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
