#!/usr/bin/env bash
# Remove the demo fleet (the containers and network scripts/demo.sh made).
# Keeps the images, the engine, and build/ (wheels, demo photos, demo secrets);
# --all also removes build/demo and build/demo-secrets.
set -euo pipefail
cd "$(dirname "$0")/.."
containers="$(docker ps -aq --filter label=photo-sync.demo=1)"
[ -z "$containers" ] || docker rm -f $containers >/dev/null
docker network rm psync-demo >/dev/null 2>&1 || true
if [ "${1:-}" = "--all" ]; then
    rm -rf build/demo build/demo-secrets
fi
echo "demo fleet removed"
