#!/usr/bin/env bash
# `make test`, stage by stage: lint, the collection (build + ansible-test sanity), pytest, the Docker engine, then each molecule
# scenario on its own. Every stage runs even when an earlier one failed (CI sees every
# failure of a run, not just the first); the summary at the end gives each stage's result
# and wall time, and the exit status is non-zero when any stage failed.
#
#   scripts/test-stages.sh                      # what `make test` runs
#   SCENARIOS="fleet" scripts/test-stages.sh    # fewer molecule scenarios
#
# Environment:
#   PYTEST_ARGS   pytest arguments (`make test` passes -n PYTEST_WORKERS --dist loadfile)
#   SCENARIOS     molecule scenarios, in order (default: ho_sync_api edge_photo_sync fleet;
#                 empty: none)
#   FAIL_FAST     1 = stop at the first failed stage (the rest show as "skipped")
# The summary also goes to build/test-stages.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
read -r -a pytest_args <<<"${PYTEST_ARGS:-}"
read -r -a scenarios <<<"${SCENARIOS-ho_sync_api edge_photo_sync fleet}"

names=() results=() seconds=()
failed=0
run_started=$SECONDS

# stage NAME COMMAND...: run it with its output streaming, record result and wall time.
stage() {
    local name=$1 started=$SECONDS result
    shift
    if [ "$failed" -gt 0 ] && [ "${FAIL_FAST:-0}" = 1 ]; then
        names+=("$name") results+=(skipped) seconds+=(0)
        return 1
    fi
    printf '\n=== %s: %s\n' "$name" "$*"
    if "$@"; then result=ok; else result=FAILED; failed=$((failed + 1)); fi
    names+=("$name") results+=("$result") seconds+=($((SECONDS - started)))
    printf '=== %s: %s in %ss\n' "$name" "$result" "$((SECONDS - started))"
    [ "$result" = ok ]
}

stage lint make --no-print-directory lint
stage collection scripts/collection-check.sh
stage pytest .venv/bin/pytest "${pytest_args[@]}"
# Molecule needs the engine; without it the scenarios cannot run and count as failed.
if stage "docker engine" scripts/docker-engine.sh; then
    for scenario in "${scenarios[@]}"; do
        # fleet-test.sh builds the images once (base-image.sh reuses them afterwards).
        stage "molecule $scenario" scripts/fleet-test.sh "$scenario"
    done
else
    for scenario in "${scenarios[@]}"; do
        names+=("molecule $scenario") results+=(skipped) seconds+=(0)
        failed=$((failed + 1))
    done
fi

mkdir -p build
{
    printf '\n%-26s %-8s %7s\n' stage result time
    for i in "${!names[@]}"; do
        printf '%-26s %-8s %6ss\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}"
    done
    total=$((SECONDS - run_started))
    printf '%-26s %-8s %6ss  (%dm%02ds)\n' total "$([ "$failed" -eq 0 ] && echo ok || echo FAILED)" \
        "$total" $((total / 60)) $((total % 60))
} | tee build/test-stages.txt
[ "$failed" -eq 0 ]
