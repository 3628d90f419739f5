#!/usr/bin/env bash
# The chaos soak (issue 26, reliability): a smoke `harness run` killed N times with SIGKILL at seeded
# checkpoints inside its stages (at least one in every stage), resumed after each kill, a finished
# stage's file truncated on the way, and its records compared with an uninterrupted run of the same
# seed on this machine: what tests/test_chaos.py runs with 9 kills.
#
#   bash scripts/chaos.sh 24            # 24 kills (20 or more for docs/benchmarks.md), seed 0
#   bash scripts/chaos.sh 24 3 /tmp/c   # seed 3, the runs, logs and result.json in /tmp/c
#
# Prints the kills survived per stage (of each stage's checkpoints) and the files and bytes compared;
# exits 1 at the first kill not survived or record that differs.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:?usage: scripts/chaos.sh KILLS [SEED] [OUT]}
SEED=${2:-0}
OUT=${3:-$(mktemp -d -t harness-chaos-XXXXXX)}
exec "${PYTHON:-.venv/bin/python}" tests/chaos_runs.py --kills "$KILLS" --seed "$SEED" --out "$OUT"
