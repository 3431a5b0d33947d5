#!/usr/bin/env bash
# submit.sh -- submit an experiment to Slurm: the twin of sge/submit.sh.
#
#   slurm/submit.sh [-e ENV_FILE] [-n TASKS] [-k] [-- EXTRA_SBATCH_ARGS...]
#
# The services job first; the tracking job with --dependency=after:SERVICES
# (Slurm can wait for a job to *start*; the tracking job still waits for the
# services file); a teardown job with --dependency=afterany:TRACKING creates
# "<services file>.stop" so the services job stops when tracking ends for any
# reason. -k keeps the services running. Prints the three job ids.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
env_file=$PWD/mpitrack.env tasks=4 keep=0
while getopts "e:n:kh" opt; do
  case $opt in
    e) env_file=$(realpath "$OPTARG") ;;
    n) tasks=$OPTARG ;;
    k) keep=1 ;;
    h) sed -n '2,11p' "$0"; exit 0 ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
[ -r "$env_file" ] || { echo "submit.sh: env file $env_file not found (-e FILE)" >&2; exit 2; }
if ! [[ "$tasks" =~ ^[0-9]+$ ]] || [ "$tasks" -lt 2 ]; then
  echo "submit.sh: -n $tasks: mpitrack needs at least 2 tasks (rank 0 dispatches, ranks 1..N-2 track, rank N-1 computes statistics); use 4 or more" >&2
  exit 2
fi
mode=$(set -a; source "$env_file" >/dev/null 2>&1; echo "${MPITRACK_SERVICES:-embedded}")
services_file=$(set -a; source "$env_file" >/dev/null 2>&1; echo "${MPITRACK_SERVICES_FILE:-$PWD/mpitrack-services.env}")
rm -f "$services_file.stop"
exports=ALL,MPITRACK_ENV=$env_file
services="" dependency=()
if [ "$mode" != external ]; then
  services=$(sbatch --parsable --export="$exports" "$@" "$here/services.sbatch" | cut -d';' -f1)
  echo "services job $services ($mode)"
  dependency=(--dependency="after:$services")
fi
tracking=$(sbatch --parsable --export="$exports" --ntasks="$tasks" "${dependency[@]}" "$@" \
  "$here/mpitrack.sbatch" | cut -d';' -f1)
echo "tracking job $tracking ($tasks tasks)"
if [ -n "$services" ] && [ "$keep" = 0 ]; then
  teardown=$(sbatch --parsable --dependency="afterany:$tracking" --job-name=mpitrack-teardown \
    --ntasks=1 --output=/dev/null "$@" --wrap="touch '$services_file.stop'" | cut -d';' -f1)
  echo "teardown job $teardown (after $tracking: stops services job $services)"
fi
