#!/usr/bin/env bash
# The molecule scenarios, one after the other, on one Docker engine and one
# set of local images (scripts/base-image.sh builds them once, then reuses them).
#
#   scripts/fleet-test.sh                 # ho_sync_api, edge_photo_sync, fleet
#   scripts/fleet-test.sh fleet           # just one
#
# Prints how long each scenario took; exits non-zero when one failed (the
# others still run). Logs go to build/molecule/<scenario>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH" NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0
scenarios=("$@")
[ "${#scenarios[@]}" -gt 0 ] || scenarios=(ho_sync_api edge_photo_sync fleet)
mkdir -p build/molecule

scripts/base-image.sh || exit 1

failed=()
for scenario in "${scenarios[@]}"; do
    log="build/molecule/$scenario.log"
    started=$SECONDS
    if molecule test -s "$scenario" >"$log" 2>&1; then
        result=ok
    else
        result=FAILED
        failed+=("$scenario")
    fi
    printf 'molecule %-16s %-6s %4ss  (%s)\n' "$scenario" "$result" "$((SECONDS - started))" "$log"
    if [ "$result" = FAILED ]; then
        grep -E -A12 'fatal:|CRITICAL|FAILED -|AssertionError|Error' "$log" | grep -v RETRYING | head -40 >&2
    fi
done
[ "${#failed[@]}" -eq 0 ] || { echo "failed: ${failed[*]}" >&2; exit 1; }
