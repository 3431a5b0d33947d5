# Sourced by scripts/test and scripts/demo: make .venv (once) and install mpitrack
# into it with the extras for local runs, tests, plots and compressed detector HDF5. Re-installs only when
# pyproject.toml changed, so repeated runs start in a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MPITRACK_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "mpitrack needs Python >= 3.10 (found: $("$PYTHON" --version 2>&1)); set PYTHON=..." >&2
    exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtualenv $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.mpitrack-installed"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing mpitrack and its dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[local,test,plots,detector]"
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
# Batch jobs and containers often lack it; platformdirs (via pgserver) warns without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
