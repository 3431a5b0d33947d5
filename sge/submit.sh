#!/usr/bin/env bash
# submit.sh -- submit an experiment to SGE: the services job, the tracking job
# and a teardown job that stops the services once tracking has ended.
#
#   sge/submit.sh [-e ENV_FILE] [-n SLOTS] [-k] [-- EXTRA_QSUB_ARGS...]
#
#   -e ENV_FILE  settings (default ./mpitrack.env; see sge/mpitrack.env.example)
#   -n SLOTS     MPI ranks of the tracking job (default 4; at least 2)
#   -k           keep the services running after tracking (no teardown job)
#   extra arguments go to every qsub (e.g. -q long.q -P myproject)
#
# The tracking job waits for the services file that the services job writes
# (SGE has no "after start" dependency); the teardown job is held with
# -hold_jid on the tracking job, so it runs when tracking ends for any reason
# (finished, failed or qdel) and tells the services job to stop. Prints the
# three job ids. Resubmitting after a qdel resumes the run.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
env_file=$PWD/mpitrack.env slots=4 keep=0
while getopts "e:n:kh" opt; do
  case $opt in
    e) env_file=$(realpath "$OPTARG") ;;
    n) slots=$OPTARG ;;
    k) keep=1 ;;
    h) sed -n '2,18p' "$0"; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ -r "$env_file" ] || { echo "submit.sh: env file $env_file not found (-e FILE)" >&2; exit 2; }
if ! [[ "$slots" =~ ^[0-9]+$ ]] || [ "$slots" -lt 2 ]; then
  echo "submit.sh: -n $slots: mpitrack needs at least 2 slots (rank 0 dispatches, ranks 1..N-2 track, rank N-1 computes statistics); use 4 or more" >&2
  exit 2
fi
# The settings the submit side needs (the jobs read the file themselves).
mode=$(set -a; source "$env_file" >/dev/null 2>&1; echo "${MPITRACK_SERVICES:-embedded}")
services_file=$(set -a; source "$env_file" >/dev/null 2>&1; echo "${MPITRACK_SERVICES_FILE:-$PWD/mpitrack-services.env}")

rm -f "$services_file.stop"   # left by an earlier teardown that found no services job
qsub_id() { qsub -terse "$@" | head -n1 | cut -d. -f1; }
services=""
if [ "$mode" != external ]; then
  services=$(qsub_id -v "MPITRACK_ENV=$env_file" "$@" "$here/services.sge")
  echo "services job $services ($mode)"
fi
tracking=$(qsub_id -v "MPITRACK_ENV=$env_file" -pe mpi "$slots" "$@" "$here/mpitrack.sge")
echo "tracking job $tracking ($slots slots)"
if [ -n "$services" ] && [ "$keep" = 0 ]; then
  teardown=$(qsub_id -hold_jid "$tracking" -N mpitrack-teardown -b y -j y -o /dev/null "$@" \
    /usr/bin/touch "$services_file.stop")
  echo "teardown job $teardown (after $tracking: stops services job $services)"
fi
