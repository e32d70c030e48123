#!/usr/bin/env bash
# The whole suite in two pytest processes side by side: the Slurm tests (tests/cluster)
# spend most of their time waiting for job-status polls, so they run beside the others
# instead of after them, and with them the long end-to-end runs marked `beside` (the
# README's commands, the engines mixed), whose subprocesses use one core at a time. The
# second process's output follows the first's, each with its slowest tests; the exit
# status is non-zero if either process failed. Arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
pytest -q -m "cluster or beside" --durations=5 "$@" >"$log" 2>&1 &
cluster=$!
trap 'kill "$cluster" 2>/dev/null' INT TERM  # an interrupted run leaves no pytest behind
pytest -q -m "not cluster and not beside" --durations=15 "$@"
rest=$?
wait "$cluster"
slurm=$?
echo "---- Slurm tests (tests/cluster) and the long runs marked beside ----"
cat "$log"
exit $((rest != 0 || slurm != 0))
