#!/usr/bin/env bash
# The whole suite in two pytest processes side by side: the Slurm tests (tests/cluster)
# spend most of their time waiting for job-status polls, so they run beside the others
# instead of after them. Their output follows the others'; the exit status is non-zero
# if either process failed. Arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
pytest -q -m cluster "$@" >"$log" 2>&1 &
cluster=$!
trap 'kill "$cluster" 2>/dev/null' INT TERM  # an interrupted run leaves no pytest behind
pytest -q -m "not cluster" "$@"
rest=$?
wait "$cluster"
slurm=$?
echo "---- Slurm tests (tests/cluster) ----"
cat "$log"
exit $((rest != 0 || slurm != 0))
