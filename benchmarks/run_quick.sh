#!/usr/bin/env bash
# Every benchmark script with --quick, one after another: a smoke test of the whole code
# path of each (seconds to a minute each on 2 CPU cores; the numbers measure nothing).
# Results go to benchmarks/results/<script>/quick/ (git-ignored), never over the committed
# ones. Fails on the first script that fails.
#
#   PYTHON=.venv/bin/python bash benchmarks/run_quick.sh
set -euo pipefail

PYTHON="${PYTHON:-python}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# every script in benchmarks/ (not the _-prefixed helpers), in name order
scripts=()
for path in "$here"/[!_]*.py; do
    scripts+=("$(basename "$path" .py)")
done

total_start=$SECONDS
for name in "${scripts[@]}"; do
    echo "=== ${name}.py --quick"
    start=$SECONDS
    if ! "$PYTHON" "$here/${name}.py" --quick; then
        echo "=== ${name}.py --quick FAILED after $((SECONDS - start)) s" >&2
        exit 1
    fi
    echo "=== ${name}.py --quick: $((SECONDS - start)) s"
done
echo "=== all ${#scripts[@]} benchmarks passed --quick in $((SECONDS - total_start)) s"
